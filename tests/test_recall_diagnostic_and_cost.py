"""Recall with its k and convergence diagnostic through the one dispatcher (`two_axis.recall_with_diagnostic`:
plain importance sampling for an ancestral sampler, the sequential bound at k and k/4 for a causal shadow
student), and the cost of a sampler (`sampler.cost`: forward equivalents, wall time per sample)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from sampler.cost import CountingDenoiser, passes_per_call, sampler_cost
from sampler.data import get_source
from sampler.quality.recall import bound_from_log_weights
from sampler.quality.two_axis import check_recall_k, recall_summary, recall_with_diagnostic
from sampler.sampling import ancestral_sample
from sampler.shadow.noise import sample_shadow_noise
from sampler.quality.recall_convergence import recall_versus_k
from sampler.shadow.noise import noise_shared_sample
from sampler.shadow.recall import shadow_pool_log_weights
from test_shadow_causal import K, L, SCHEDULE, _base, _causal, _strong_causal_head
from theory import LogLinearSchedule

LENGTH = 6


def _exact():
    source = get_source("exact", seed=0, seq_len=LENGTH)
    return source, source.denoiser(dtype=torch.float64)


def test_many_steps_recall_is_the_true_nll_with_zero_change() -> None:
    """Steps >> tokens: tokens reveal one at a time, every weight is the chain rule, so the bound at every k is the
    true −log p(x)/L and the change k/4 -> k is 0 (2^12 steps, L = 6: two tokens share a step with probability
    about 0.4 % per pattern and sequence, about 10 % for one of the 24 here; seeded, and it passes)."""
    source, oracle = _exact()
    x = source.sample_batch(4, LENGTH, torch.Generator().manual_seed(1))
    report = recall_with_diagnostic(oracle, LogLinearSchedule(), x, steps=2**12, max_k=4, seed=3)
    true_nll = -source.log_prob(x).double() / LENGTH
    assert report["k"] == 4 and [level["k"] for level in report["levels"]] == [1, 4]
    assert torch.allclose(report["per_sequence"], true_nll, atol=1e-6)
    assert abs(report["change"]) < 1e-6 and report["remaining"] < 1e-5
    assert report["ess"] == pytest.approx(1.0, abs=1e-6)


def test_tolerance_stops_early_and_recall_falls_with_k() -> None:
    """A loose tolerance stops at k = 4; without one the plain bound goes to max_k, and on average it does not
    rise with k (Jensen; the same pool, so each level pairs with the one before).  4 steps, L = 6."""
    source, oracle = _exact()
    x = source.sample_batch(32, LENGTH, torch.Generator().manual_seed(2))
    loose = recall_with_diagnostic(oracle, LogLinearSchedule(), x, steps=4, max_k=64, tolerance=10.0, seed=0)
    assert loose["k"] == 4 and math.isfinite(loose["remaining"])
    full = recall_with_diagnostic(oracle, LogLinearSchedule(), x, steps=4, max_k=64, seed=0)
    values = [level["recall"] for level in full["levels"]]
    assert [level["k"] for level in full["levels"]] == [1, 4, 16, 64]
    assert values[0] > values[-1]  # k = 1 is looser than k = 64 (seeded; the gap is ~0.05 nats here)
    assert full["remaining"] == pytest.approx(abs(full["change"]) + 2 * full["change_se"])
    true_nll = float((-source.log_prob(x).double() / LENGTH).mean())
    assert values[-1] >= true_nll - 3 * full["recall_se"]  # an upper bound on the sampler's NLL, itself >= the truth
    summary = recall_summary(full)
    assert summary["k"] == 64 and summary["by_k"][0][0] == 1 and "per_sequence" not in summary


def test_shadow_recall_series_regroups_one_pool_of_sequential_weights() -> None:
    """The causal student's report through the dispatcher: one pool grown to 1, 4, 16 draws
    (shadow_pool_log_weights with the seeded generator, blocks of 1, 3, 12); the bound at k is the mean over the
    pool's disjoint groups of k, and the change at k is paired against k/4 on the same pool."""
    student = _causal(_base(), head_std=0.5)
    x = torch.randint(0, K, (5, L), generator=torch.Generator().manual_seed(2))
    report = recall_with_diagnostic(student, SCHEDULE, x, steps=3, max_k=16, seed=7)
    generator = torch.Generator().manual_seed(7)
    log_w = torch.cat([shadow_pool_log_weights(student, SCHEDULE, x, steps=3, num_draws=n, generator=generator)
                       for n in (1, 3, 12)])
    at_k = bound_from_log_weights(log_w, L)
    at_quarter = bound_from_log_weights(log_w.reshape(4, 4, 5), L).mean(0)
    assert report["estimator"] == "sequential" and report["k"] == 16
    assert [level["k"] for level in report["levels"]] == [1, 4, 16]
    assert torch.allclose(report["per_sequence"], at_k, atol=1e-12)
    assert report["change"] == pytest.approx(float((at_k - at_quarter).mean()), abs=1e-12)
    at_one = bound_from_log_weights(log_w.reshape(16, 1, 5), L).mean(0)
    assert report["levels"][0]["recall"] == pytest.approx(float(at_one.mean()), abs=1e-12)


def test_estimator_must_fit_the_sampler() -> None:
    """'sequential' on a per-token-independent denoiser, and 'plain' on a shadow student, are refused before any work."""
    student = _causal(_base(), head_std=0.5)
    x = torch.randint(0, K, (3, L), generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="needs a causal shadow student"):
        recall_versus_k(student.base, SCHEDULE, x, steps=2, estimator="sequential", ks=[1])
    with pytest.raises(ValueError, match="use estimator='sequential'"):
        recall_versus_k(student, SCHEDULE, x, steps=2, estimator="plain", ks=[1])


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
def test_sequential_series_converges_to_the_students_law() -> None:
    """K = 3, L = 3, N = 2, a causal student whose conditionals move strongly with the earlier tokens' category
    noise.  Ground truth: the noise-shared sampler's own law by Monte Carlo over 400 000 of its outputs (an
    independent code path: `noise_shared_sample`), q̂(x), for the sequences with at least 2 000 counts; its error
    on −log q̂(x)/L is the delta-method SE sqrt((1 − q̂)/(q̂ n))/L.  The k-series (k = 1 ... 1 024, one pool) must
    (a) start above the truth (k = 1 is E[−log w]/L, loose by Jensen: by > 6 SE here) and fall towards it, and
    (b) at k = 1 024 agree with it: mean over sequences of (bound − truth) within 4 SE of the truth's error plus
    the estimator's own remaining change (which must be < 0.01).
    False-fail rate (normal approximation, seeded): below 1e-4.  Planted bugs caught: R1 (c drawn on [0, 1], not in I_l), R2 (the weight |I_l| dropped), R3 (the
    tokens of a step walked with z already showing them)."""
    samples = 400_000
    student = _strong_causal_head(_base(vocab=3, length=3, seed=1, logit_scale=30.0))
    noise = sample_shadow_noise(samples, 3, SCHEDULE, 3, 3, torch.Generator().manual_seed(21))
    drawn = noise_shared_sample(student, SCHEDULE, num_steps=2, noise=noise, mask_id=3, vocab_size=3, batch_size=8192)
    counts = torch.bincount(drawn[:, 0] * 9 + drawn[:, 1] * 3 + drawn[:, 2], minlength=27).double()
    outcomes = torch.tensor(list(itertools.product(range(3), repeat=3)))
    common = counts >= 2000
    q = counts[common] / samples
    truth = -q.log() / 3
    truth_se = ((1 - q) / (q * samples)).sqrt() / 3
    report = recall_versus_k(student, SCHEDULE, outcomes[common], steps=2, estimator="sequential",
                             ks=[1, 4, 16, 64, 256, 1024], seed=5, batch_size=8192)
    assert int(common.sum()) >= 6
    first, last = report["levels"][0]["per_sequence"], report["per_sequence"]
    assert float((first - truth).mean()) > 6 * float(truth_se.pow(2).sum().sqrt()) / len(truth)
    assert float(first.mean()) > float(last.mean())
    assert report["remaining"] < 0.01
    error = float(truth_se.pow(2).sum().sqrt()) / len(truth)
    assert abs(float((last - truth).mean())) < 4 * error + report["remaining"], (last, truth)


def test_recall_k_must_be_a_power_of_4() -> None:
    assert check_recall_k(64) == 64
    for bad in (0, 8, 2, True):
        with pytest.raises(ValueError, match="recall_k"):
            check_recall_k(bad)


def test_forward_equivalents_count_distinct_calls() -> None:
    """Uncached ancestral at N = 1 step: exactly one call per sample; cached at 2^12 steps: at most L + 1 calls per
    sample (the first, then one after each of its changes while the batch still has masks) and more than 2; the count does not change the
    samples (same seed, same draws)."""
    source, oracle = _exact()

    def draw(steps, cached):
        return lambda d: ancestral_sample(d, LogLinearSchedule(), num_steps=steps, num_samples=20, seq_len=LENGTH,
                                          mask_id=oracle.mask_id, vocab_size=source.vocab_size, cached=cached,
                                          generator=torch.Generator().manual_seed(0))
    one = sampler_cost(draw(1, False), oracle, repeats=2)
    assert one["forward_equivalents"] == 1.0 and one["wall_runs"] == 2 and one["wall_s_per_sample"] > 0
    many = sampler_cost(draw(2**12, True), oracle, repeats=1)
    assert many["forward_equivalents"] <= LENGTH + 1
    assert many["forward_equivalents"] > 2.0  # tokens reveal at different steps (L = 6 over 4096 steps)
    counter = CountingDenoiser(oracle)
    assert torch.equal(draw(8, True)(counter), draw(8, True)(oracle)) and counter.mask_id == oracle.mask_id


def test_passes_per_call_of_shadow_students() -> None:
    """Base + head for a causal student (drafts read off the base pass); base + head + draft trunk pass for the
    input head with drafts; 1 for a plain denoiser; an argmax wrapper counts as its student."""
    assert passes_per_call(_base()) == 1
    assert passes_per_call(_causal(_base())) == 2
    fake = SimpleNamespace(reads_shadow_noise=True, shadow=SimpleNamespace(head="input", draft=True))
    assert passes_per_call(fake) == 3
    assert passes_per_call(SimpleNamespace(reads_shadow_noise=True, shadow=SimpleNamespace(head="input", draft=False))) == 2
    assert passes_per_call(SimpleNamespace(student=fake)) == 3


def test_bench_comparison_is_undetermined_while_recall_still_moves() -> None:
    """sampler.run.bench.recall_determined: a Δ recall of −0.02 with one row still moving by 0.02 ± 0.005
    (remaining 0.03) is undetermined and names that row; a Δ of −0.05 is determined; a frontier gap is judged
    against the curve's rows too."""
    from sampler.run.bench import recall_determined

    def row(name, value, change, se, temperature=1.0):
        return {"sampler": name, "temperature": temperature,
                "recall_diagnostic": {"value": value, "change": change, "change_se": se}}
    a, b = row("student", 1.50, -0.02, 0.005), row("teacher", 1.52, -0.001, 0.0005)
    verdict = recall_determined(a, b, None, {"recall": [-0.02, 0.01], "frontier_gap": None})
    assert not verdict["recall_determined"] and "student" in verdict["undetermined"] and "teacher" not in verdict["undetermined"]
    assert recall_determined(a, b, None, {"recall": [-0.05, 0.01], "frontier_gap": None}) == {
        "recall_determined": True, "undetermined": None}
    curve = [row("oracle", 1.6, -0.1, 0.01, 0.9), row("oracle", 1.55, 0.0, 0.0)]
    gap = recall_determined(row("student", 1.5, 0.0, 0.0), b, curve, {"recall": [-0.05, 0.01], "frontier_gap": -0.05})
    assert not gap["recall_determined"] and "frontier gap" in gap["undetermined"] and "oracle T=0.9" in gap["undetermined"]
