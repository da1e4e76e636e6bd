"""Recall estimators against exact ground truth: the twisted particle filter (sampler.quality.recall_smc), the
plain importance estimator, the exact enumeration (sampler.quality.recall_exact) and the convergence report
(sampler.quality.recall_convergence).

Ground truth is exact (enumeration of every reveal pattern), itself checked by hand on two tokens and against
the ancestral sampler's frequencies.  Monte Carlo tests are seeded; each states its false-fail rate.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from sampler.data import HiddenMarkovSource
from sampler.quality.recall import reveal_probabilities
from sampler.quality.recall_convergence import (
    converged,
    format_recall_convergence,
    plain_log_weights,
    recall_versus_k,
    remaining_change,
)
from sampler.quality.recall_exact import exact_sampler_log_likelihood
from sampler.quality.recall_smc import resample_ancestors, smc_log_likelihood, smc_recall_per_sequence
from sampler.sampling import ancestral_sample
from theory import CosineSchedule, LogLinearSchedule


def tiny_source(seq_len: int = 6) -> HiddenMarkovSource:
    """V = 3, two states: small enough to enumerate, and not symmetric in tokens or positions."""
    return HiddenMarkovSource(seed=3, seq_len=seq_len, vocab_size=3, num_states=2, topic_size=3, support=2)


class TimeTiltedDenoiser:
    """The exact denoiser with a time-dependent tilt, log q ∝ log p(x_l | z) + strength · t · bias_v, so a
    denoiser queried at the wrong time gives a different law (the exact denoiser ignores t)."""

    def __init__(self, source: HiddenMarkovSource, strength: float = 3.0) -> None:
        self.exact = source.denoiser(dtype=torch.float64)
        self.mask_id = self.exact.mask_id
        self.bias = torch.linspace(-1.0, 1.0, source.vocab_size, dtype=torch.float64)
        self.strength = strength

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tilted = self.exact(z, t) + self.strength * t.double()[:, None, None] * self.bias
        return torch.log_softmax(tilted, dim=-1)


def all_sequences(vocab_size: int, seq_len: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=seq_len)), dtype=torch.int64)


# ------------------------------------------------------------------------------------------- ground truth


def test_exact_enumeration_matches_the_hand_sum_on_two_tokens():
    """L = 2, N = 2: q = Σ over the four patterns (both at step 0; one then the other; ...), written out by
    hand from the denoiser's conditionals at t_0 = 1 and t_1 = 1/2, T = 0.8."""
    source, schedule, temperature = tiny_source(seq_len=2), CosineSchedule(), 0.8
    denoiser = TimeTiltedDenoiser(source)
    x = torch.tensor([[2, 0]])
    p0, p1 = reveal_probabilities(schedule, 2).tolist()
    assert p1 == 1.0

    def q(z, t, position):
        log_probs = denoiser(torch.tensor([z]), torch.tensor([t], dtype=torch.float64))[0, position]
        return float(torch.softmax(log_probs / temperature, dim=-1)[x[0, position]])

    M = denoiser.mask_id
    both_first = p0 * p0 * q([M, M], 1.0, 0) * q([M, M], 1.0, 1)
    first_then_second = p0 * (1 - p0) * q([M, M], 1.0, 0) * q([2, M], 0.5, 1)
    second_then_first = (1 - p0) * p0 * q([M, M], 1.0, 1) * q([M, 0], 0.5, 0)
    both_last = (1 - p0) * (1 - p0) * q([M, M], 0.5, 0) * q([M, M], 0.5, 1)
    expected = math.log(both_first + first_then_second + second_then_first + both_last)
    got = exact_sampler_log_likelihood(denoiser, schedule, x, steps=2, temperature=temperature)
    assert abs(float(got[0]) - expected) < 1e-12


@pytest.mark.parametrize("schedule,steps,temperature", [(CosineSchedule(), 3, 0.7), (LogLinearSchedule(), 2, 1.0)])
def test_exact_enumeration_is_the_ancestral_samplers_law(schedule, steps, temperature):
    """Σ_x q_N(x) = 1 over all 81 sequences (V = 3, L = 4), and q_N matches the frequencies of ancestral_sample
    with the time-tilted denoiser (40 000 draws, chi-square).  False-fail rate 1e-4 per case."""
    source = tiny_source(seq_len=4)
    denoiser = TimeTiltedDenoiser(source)
    x = all_sequences(3, 4)
    q = exact_sampler_log_likelihood(denoiser, schedule, x, steps=steps, temperature=temperature).exp()
    assert abs(float(q.sum()) - 1.0) < 1e-12
    draws = ancestral_sample(denoiser, schedule, num_steps=steps, num_samples=40000, seq_len=4, mask_id=denoiser.mask_id,
                             vocab_size=3, generator=torch.Generator().manual_seed(11), temperature=temperature,
                             batch_size=40000)
    counts = torch.bincount((draws * torch.tensor([27, 9, 3, 1])).sum(1), minlength=81).double()
    assert chisquare(counts.numpy(), (q * 40000).numpy()).pvalue > 1e-4


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_one_step_is_the_sum_of_one_step_marginals(temperature):
    """At one step every token reveals from the all-mask context: the exact value and the SMC estimate (any
    particle count) are Σ_l log q_T(x_l | all masked), read from the denoiser directly."""
    source = tiny_source()
    denoiser = source.denoiser(dtype=torch.float64)
    x = source.sample_batch(5, generator=torch.Generator().manual_seed(0))
    masked = torch.full_like(x, denoiser.mask_id)
    log_q = torch.log_softmax(denoiser(masked, torch.ones(5)) / temperature, dim=-1)
    expected = log_q.gather(-1, x[..., None])[..., 0].sum(dim=1)
    exact = exact_sampler_log_likelihood(denoiser, LogLinearSchedule(), x, steps=1, temperature=temperature)
    smc = smc_log_likelihood(denoiser, LogLinearSchedule(), x, steps=1, temperature=temperature, particles=3,
                             generator=torch.Generator().manual_seed(1))["log_likelihood"]
    torch.testing.assert_close(exact, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(smc, expected, rtol=0, atol=1e-12)


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
def test_many_steps_give_the_chain_rule():
    """Exact denoiser, 400 steps for 6 tokens: tokens reveal almost always one at a time, so q_N(x) -> p(x)
    and the SMC bound (16 particles) lies within 0.01 nats per token of −log p(x)/L (forward algorithm).
    At 2 steps the same data sit more than 0.05 above (the anchor can tell)."""
    source = tiny_source()
    denoiser = source.denoiser(dtype=torch.float64)
    x = source.sample_batch(8, generator=torch.Generator().manual_seed(2))
    true = -source.log_prob(x) / 6
    many = smc_recall_per_sequence(denoiser, LogLinearSchedule(), x, steps=400, particles=16,
                                   generator=torch.Generator().manual_seed(3))
    assert float((many - true).abs().max()) < 0.01
    few = -exact_sampler_log_likelihood(denoiser, LogLinearSchedule(), x, steps=2) / 6
    assert float((few - true).mean()) > 0.05


# ------------------------------------------------------------------------------------ unbiasedness of Ẑ

SMC_VARIANTS = [  # (twist, proposal, resample_below, resampling, temperature)
    (0.5, "prior", 0.5, "systematic", 1.0),
    (0.0, "adapted", 1.0, "multinomial", 0.7),  # the fully adapted filter, resampling at every step
    (0.75, "adapted", 0.9, "systematic", 1.3),
    (1.0, "prior", 1.0, "systematic", 1.0),
]


def repeated_estimates(log_z: torch.Tensor, repeats: int, exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of Ẑ/q over repeats, its SE) per sequence, from log Ẑ of `repeats` stacked copies."""
    ratio = (log_z.reshape(repeats, -1) - exact).exp()
    return ratio.mean(dim=0), ratio.std(dim=0) / math.sqrt(repeats)


@pytest.mark.parametrize("twist,proposal,resample_below,resampling,temperature", SMC_VARIANTS)
def test_smc_estimate_of_q_is_unbiased(twist, proposal, resample_below, resampling, temperature):
    """E[Ẑ] = q_N(x) exactly (recall_exact), for 3 sequences of 6 tokens, 3 cosine steps, the time-tilted
    denoiser, 4 particles, 3 000 independent runs each: |mean(Ẑ/q) − 1| < 4 SE.  The estimates are far from
    exact one by one (so the check has power: planted bugs S1-S5 fail it).  False-fail rate about 2e-4 per
    case (3 normal 4-SE checks; Ẑ/q is bounded here, the SE is well estimated at 3 000 runs)."""
    source, schedule, repeats = tiny_source(), CosineSchedule(), 3000
    denoiser = TimeTiltedDenoiser(source)
    x = source.sample_batch(3, generator=torch.Generator().manual_seed(4))
    exact = exact_sampler_log_likelihood(denoiser, schedule, x, steps=3, temperature=temperature)
    result = smc_log_likelihood(denoiser, schedule, x.repeat(repeats, 1), steps=3, temperature=temperature,
                                particles=4, twist=twist, proposal=proposal, resample_below=resample_below,
                                resampling=resampling, generator=torch.Generator().manual_seed(5), batch_size=4096)
    mean, se = repeated_estimates(result["log_likelihood"], repeats, exact)
    assert float(se.max()) > 1e-3  # the single estimates do vary
    assert ((mean - 1).abs() < 4 * se).all(), (mean, se)


def test_plain_importance_weights_are_unbiased_for_q():
    """E[w] = q_N(x) for the plain estimator's weights (same configuration as above, T = 0.8, 6 000 patterns
    per sequence).  False-fail rate about 2e-4."""
    source, schedule, repeats = tiny_source(), CosineSchedule(), 6000
    denoiser = TimeTiltedDenoiser(source)
    x = source.sample_batch(3, generator=torch.Generator().manual_seed(4))
    exact = exact_sampler_log_likelihood(denoiser, schedule, x, steps=3, temperature=0.8)
    log_w = plain_log_weights(denoiser, schedule, x, steps=3, num_patterns=repeats, temperature=0.8,
                              generator=torch.Generator().manual_seed(6), batch_size=8192)
    mean, se = repeated_estimates(log_w.reshape(-1), repeats, exact)
    assert ((mean - 1).abs() < 4 * se).all(), (mean, se)


def test_resampling_is_unbiased_in_offspring_counts():
    """E[#offspring of particle p] = P w_p / Σ w for both schemes (20 000 rows of 5 particles, fixed uneven
    weights, one of them zero: never chosen).  4-SE checks, false-fail rate about 3e-4 per scheme."""
    weights = torch.tensor([0.5, 0.05, 0.0, 0.3, 0.15], dtype=torch.float64)
    log_w = weights.log().expand(20000, -1).contiguous()
    for scheme in ("systematic", "multinomial"):
        ancestors = resample_ancestors(log_w, scheme, torch.Generator().manual_seed(8))
        counts = torch.nn.functional.one_hot(ancestors, 5).sum(dim=1).double()
        mean, se = counts.mean(0), counts.std(0) / math.sqrt(20000)
        assert counts[:, 2].sum() == 0
        assert ((mean - 5 * weights).abs() <= 4 * se + 1e-12).all(), (scheme, mean)


# --------------------------------------------------------------------------------- convergence to exact


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
def test_both_estimators_converge_to_the_exact_value():
    """L = 8, 4 loglinear steps (4^8 patterns), the embedded source's exact denoiser, T = 1, 6 sequences:
    at k = 256 both estimates lie within 0.05 nats/token of −log q_N(x)/L for every sequence and within 0.02 on
    average, while at k = 1 both are more than 0.1 above on average and 5 times further off in mean absolute
    error.  Deterministic given the seeds; when written the k = 256 errors were (plain) mean 0.005, max 0.019 and
    (SMC) mean 0.013, max 0.032, the k = 1 gaps 0.13 and 0.29 (the spread of single runs is about 0.005-0.01 per
    sequence at this k, so the margins are 2.5-4 SD)."""
    source = HiddenMarkovSource(seed=0, seq_len=8)
    denoiser = source.denoiser(dtype=torch.float64)
    x = source.sample_batch(6, generator=torch.Generator().manual_seed(7))
    exact = -exact_sampler_log_likelihood(denoiser, LogLinearSchedule(), x, steps=4) / 8
    for estimator in ("plain", "smc"):
        report = recall_versus_k(denoiser, LogLinearSchedule(), x, steps=4, estimator=estimator, ks=(1, 4, 16, 64, 256),
                                 seed=9)
        gap = report["per_sequence"] - exact
        first_gap = report["levels"][0]["per_sequence"] - exact
        assert float(gap.abs().max()) < 0.05 and abs(float(gap.mean())) < 0.02, (estimator, gap)
        assert float(first_gap.mean()) > 0.1 and float(first_gap.abs().mean()) > 5 * float(gap.abs().mean())


# ------------------------------------------------------------------------------------ the k report, the rule


def test_recall_versus_k_reports_changes_as_paired_differences_and_extends_while_moving():
    """Each level's change is the mean per-sequence difference from the level before (paired SE); with a
    tolerance the k grid extends ×4 past `ks` while the remaining change exceeds it (capped by max_k); the
    plain levels are regrouped from one pool (k = 1 averages every pattern)."""
    source = tiny_source()
    denoiser = source.denoiser(dtype=torch.float64)
    x = source.sample_batch(6, generator=torch.Generator().manual_seed(1))
    for estimator in ("plain", "smc"):
        report = recall_versus_k(denoiser, CosineSchedule(), x, steps=3, estimator=estimator, ks=(1, 4),
                                 tolerance=1e-9, max_k=64, seed=2)
        levels = report["levels"]
        assert [level["k"] for level in levels] == [1, 4, 16, 64]
        for before, after in zip(levels, levels[1:]):
            diff = after["per_sequence"] - before["per_sequence"]
            assert abs(after["change"] - float(diff.mean())) < 1e-12
            assert abs(after["change_se"] - float(diff.std() / math.sqrt(6))) < 1e-12
        assert report["k"] == 64 and report["recall"] == levels[-1]["recall"]
        assert remaining_change(report) == abs(report["change"]) + 2 * report["change_se"]
        assert 0 < report["ess"] <= 1
        assert "k=64" in format_recall_convergence(report) and estimator in format_recall_convergence(report)
    stopped = recall_versus_k(denoiser, CosineSchedule(), x, steps=3, estimator="plain", ks=(1, 4), tolerance=10.0,
                              seed=2)
    assert stopped["k"] == 4


def test_converged_allows_a_comparison_only_when_both_remaining_changes_are_below_the_difference():
    """Remaining change = |change| + 2 SE, against |recall_a − recall_b| (0.05 here) or the claimed difference."""

    def report(recall, change, change_se):
        return {"recall": recall, "change": change, "change_se": change_se}

    settled, moving = report(1.50, -0.001, 0.001), report(1.45, -0.045, 0.005)
    assert converged(settled, report(1.45, -0.002, 0.001))          # 0.003 and 0.004 < 0.05
    assert not converged(settled, moving)                            # moving: 0.055 > 0.05
    assert not converged(settled, report(1.45, -0.001, 0.03))       # SE alone too large: 0.061 > 0.05
    assert not converged(settled, report(1.499, -0.001, 0.001))     # the difference 0.001 < 0.003
    assert converged(settled, moving, claimed_difference=0.1)       # a larger claimed difference
    assert not converged(settled, report(1.45, math.nan, math.nan))  # one level only: no evidence


def test_bad_input_is_refused_by_name_before_any_work():
    source = tiny_source()
    denoiser = source.denoiser(dtype=torch.float64)
    x = source.sample_batch(2)
    schedule = CosineSchedule()
    for kwargs, name in [({"particles": 0}, "particles"), ({"twist": 1.5}, "twist"), ({"proposal": "x"}, "proposal"),
                         ({"resampling": "x"}, "resampling"), ({"resample_below": -1.0}, "resample_below"),
                         ({"temperature": 0.0}, "temperature"), ({"steps": 0}, "steps")]:
        with pytest.raises(ValueError, match=name):
            smc_log_likelihood(denoiser, schedule, x, **{"steps": 2, **kwargs})
    with pytest.raises(ValueError, match="heldout"):
        smc_log_likelihood(denoiser, schedule, x + 5, steps=2)
    with pytest.raises(ValueError, match="ks"):
        recall_versus_k(denoiser, schedule, x, steps=2, ks=(1, 2))
    with pytest.raises(ValueError, match="estimator"):
        recall_versus_k(denoiser, schedule, x, steps=2, estimator="exact")
    with pytest.raises(ValueError, match="smc options"):
        recall_versus_k(denoiser, schedule, x, steps=2, estimator="plain", twist=0.5)
    with pytest.raises(ValueError, match="max_patterns"):
        exact_sampler_log_likelihood(denoiser, schedule, source.sample_batch(1, seq_len=12), steps=4, max_patterns=1000)


def test_benchmark_script_prints_and_stores_the_paired_table(tmp_path, capsys):
    """benchmarks/recall_convergence.py end to end on a tiny run: one row per (steps, k), the SMC − plain
    column is the paired mean difference of the stored per-sequence values, the JSON keeps every level."""
    import json

    from benchmark_module import load_benchmark

    module = load_benchmark("recall_convergence")
    module.main(["--steps", "2", "--ks", "1", "4", "--heldout", "3", "--seq-len", "6", "--out", str(tmp_path)])
    text = (tmp_path / "recall_convergence.md").read_text()
    assert text.count("\n| 2 | ") == 2 and "SMC − plain" in text and text.strip() in capsys.readouterr().out
    stored = json.loads((tmp_path / "recall_convergence.json").read_text())
    plain, smc = stored["reports"]
    assert (plain["estimator"], smc["estimator"]) == ("plain", "smc")
    diff = torch.tensor(smc["levels"][1]["per_sequence"]) - torch.tensor(plain["levels"][1]["per_sequence"])
    assert f"{float(diff.mean()):+.4f}" in text.splitlines()[-1]
