"""Tests of the confidence-ordered sampler and its exact law (sampler.confidence)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from sampler.confidence import (
    confidence_log_likelihood,
    confidence_recall_per_sequence,
    confidence_recall_unavailable,
    confidence_sample,
    reveal_counts,
)
from sampler.data import HiddenMarkovSource
from theory.schedules import CosineSchedule, LogLinearSchedule

FIT_LEVEL = 1e-3  # chi-square goodness-of-fit: false-fail rate of a correct sampler
TINY = dict(vocab_size=3, num_states=3, topic_size=3, support=2, successors=2, stickiness=0.5, floor=0.1)


def tiny_denoiser(length: int):
    return HiddenMarkovSource(seed=0, seq_len=length, **TINY).denoiser(dtype=torch.float64)


class Recording:
    """Wraps a denoiser and keeps every z it is called with."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, []
        self.mask_id = getattr(denoiser, "mask_id", None)

    def __call__(self, z, t):
        self.calls.append((z.clone(), t.clone()))
        return self.denoiser(z, t)


@pytest.mark.parametrize("schedule", [LogLinearSchedule(), CosineSchedule()], ids=["loglinear", "cosine"])
@pytest.mark.parametrize("steps,length", [(1, 10), (2, 10), (3, 7), (4, 10), (8, 10), (16, 10), (5, 64)])
def test_reveal_counts_follow_the_schedules_expected_fraction(schedule, steps, length):
    """C_i = round-half-up(L·(α(t_{i+1}) − α(1))/(1 − α(1))), written from α directly; the sampler reveals them."""
    alpha_end = float(schedule.alpha(1.0))
    expected, previous = [], 0
    for i in range(1, steps + 1):
        fraction = (float(schedule.alpha(1.0 - i / steps)) - alpha_end) / (1.0 - alpha_end)
        cumulative = length if i == steps else math.floor(round(length * fraction, 9) + 0.5)
        expected.append(cumulative - previous)
        previous = cumulative
    counts = reveal_counts(schedule, steps, length)
    assert counts == expected and sum(counts) == length and min(counts) >= 0
    recording = Recording(tiny_denoiser(length))
    out = confidence_sample(recording, schedule, num_samples=3, num_steps=steps, seq_len=length, mask_id=3,
                            vocab_size=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, length) and int(out.max()) < 3 and int(out.min()) >= 0
    masked_before = [int((z == 3).sum(1).unique().item()) for z, _ in recording.calls]
    nonzero = [c for c in counts if c > 0]
    assert [a - b for a, b in zip(masked_before, masked_before[1:] + [0])] == nonzero
    times = [float(t[0]) for _, t in recording.calls]
    assert times == pytest.approx([1.0 - i / steps for i, c in enumerate(counts) if c > 0])  # float32 t, as ancestral


class ConfidenceTable:
    """A toy denoiser (K = 2) whose max-probability at position l is fixed by `peaks[l]` (ties allowed),
    whatever z holds."""

    def __init__(self, peaks):
        self.peaks = torch.tensor(peaks, dtype=torch.float64)
        self.mask_id = 2

    def __call__(self, z, t):
        p = self.peaks.expand(z.shape[0], -1)
        return torch.stack([p.log(), (1 - p).log()], dim=-1)


@pytest.mark.parametrize("confidence", ["max_prob", "sampled_prob"])
def test_the_most_confident_positions_reveal_first_and_ties_go_to_the_lower_position(confidence):
    peaks = [0.6, 0.9, 0.75, 0.9, 0.6, 0.99]  # order by confidence: 5, then 1 and 3 (tie), 2, 0 and 4 (tie)
    recording = Recording(ConfidenceTable(peaks))
    out = confidence_sample(recording, LogLinearSchedule(), num_samples=4, num_steps=6, seq_len=6, mask_id=2,
                            vocab_size=2, generator=torch.Generator().manual_seed(0), confidence=confidence)
    states = [z for z, _ in recording.calls] + [out]
    newly = [((before == 2) & (after != 2)) for before, after in zip(states, states[1:])]
    assert all(bool((step.sum(1) == 1).all()) for step in newly)  # one token per row per step (reveal_counts)
    assert reveal_counts(LogLinearSchedule(), 6, 6) == [1] * 6
    order = torch.stack([step.long().argmax(1) for step in newly], dim=1)  # (row, step) -> revealed position
    if confidence == "max_prob":  # the full ranking, the same in every row
        assert order.tolist() == [[5, 1, 3, 2, 0, 4]] * 4
    else:  # by the drawn token's probability: each row its own order, every position once
        assert (order.sort(dim=1).values == torch.arange(6)).all()
        assert len({tuple(row) for row in order.tolist()}) > 1


def test_most_confident_takes_the_top_scores_among_masked_positions_with_ties_to_the_lower_position():
    from sampler.confidence import most_confident

    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.99], [0.3, 0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    masked = torch.tensor([[True, True, True, True, False], [False, True, True, True, True]])
    chosen = most_confident(scores, masked, 2)
    assert chosen.tolist() == [[False, True, True, False, False], [False, True, True, False, False]]
    assert most_confident(scores, masked, 3).tolist()[0] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="only 4 masked"):
        most_confident(scores, masked, 5)


def step_branches(q: torch.Tensor, masked: list[int], count: int, vocab: int, confidence: str):
    """(assignments [(l, v)], probability) of one step: max_prob ranks the masked positions by max_v q (python
    sort, ties to the lower position) and branches over their tokens; sampled_prob branches over the draws at
    every masked position and keeps the `count` whose drawn token is most probable."""
    if confidence == "max_prob":
        ranked = sorted(masked, key=lambda l: (-float(q[l].max()), l))[:count]
        for tokens in itertools.product(range(vocab), repeat=len(ranked)):
            yield list(zip(ranked, tokens)), math.prod(float(q[l, v]) for l, v in zip(ranked, tokens))
        return
    for draws in itertools.product(range(vocab), repeat=len(masked)):
        ranked = sorted(zip(masked, draws), key=lambda lv: (-float(q[lv[0], lv[1]]), lv[0]))[:count]
        yield ranked, math.prod(float(q[l, v]) for l, v in zip(masked, draws))


def enumerate_law(denoiser, schedule, steps: int, length: int, vocab: int, mask_id: int,
                  temperature: float = 1.0, confidence: str = "max_prob") -> dict[tuple, float]:
    """The sampler's law by walking its whole tree of steps (`step_branches`), from the all-masked state."""
    counts = reveal_counts(schedule, steps, length)
    law: dict[tuple, float] = {}

    def walk(z: list[int], step: int, prob: float) -> None:
        if step == steps:
            law[tuple(z)] = law.get(tuple(z), 0.0) + prob
            return
        if counts[step] == 0:
            return walk(z, step + 1, prob)
        logits = denoiser(torch.tensor([z]), torch.tensor([1.0 - step / steps]))[0].double() / temperature
        q = torch.softmax(logits, dim=-1)
        masked = [l for l in range(length) if z[l] == mask_id]
        for assignments, p in step_branches(q, masked, counts[step], vocab, confidence):
            if p > 0:
                branch = list(z)
                for l, v in assignments:
                    branch[l] = v
                walk(branch, step + 1, prob * p)

    walk([mask_id] * length, 0, 1.0)
    return law


def chi_square_pvalue(x: torch.Tensor, law: dict[tuple, float]) -> float:
    """Goodness of fit of samples (L = 4, V = 3) to an enumerated law over the 81 sequences, cells with
    expected count < 5 pooled; a sample outside the law's support fails at once."""
    cells = list(itertools.product(range(3), repeat=4))
    expected = torch.tensor([law.get(row, 0.0) for row in cells], dtype=torch.float64) * len(x)
    observed = torch.bincount((x * torch.tensor([27, 9, 3, 1])).sum(1), minlength=81).double()
    assert float(observed[expected == 0].sum()) == 0.0
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    return float(stats.chisquare(obs.numpy(), exp.numpy()).pvalue)


@pytest.mark.parametrize("steps,length,temperature", [(2, 4, 1.0), (3, 5, 1.0), (2, 4, 0.6)])
def test_exact_likelihood_equals_the_enumerated_law_of_the_sampler(steps, length, temperature):
    denoiser = tiny_denoiser(length)
    schedule = LogLinearSchedule()
    law = enumerate_law(denoiser, schedule, steps, length, 3, 3, temperature)
    x = torch.tensor(list(itertools.product(range(3), repeat=length)))
    enumerated = torch.tensor([law.get(tuple(row.tolist()), 0.0) for row in x], dtype=torch.float64)
    assert abs(float(enumerated.sum()) - 1.0) < 1e-12
    log_q = confidence_log_likelihood(denoiser, schedule, x, num_steps=steps, temperature=temperature, mask_id=3,
                                      batch_size=50)
    torch.testing.assert_close(log_q.exp(), enumerated, atol=1e-13, rtol=0)
    recall = confidence_recall_per_sequence(denoiser, schedule, x[:7], num_steps=steps, temperature=temperature,
                                            mask_id=3)
    torch.testing.assert_close(recall, -enumerated[:7].log() / length)


def test_sampling_frequencies_match_the_exact_law():
    """30 000 samples, L = 4, V = 3, 2 steps, chi-square against the enumerated law over the 81 sequences
    (cells with expected count < 5 pooled); seeded, false-fail rate FIT_LEVEL = 1e-3."""
    denoiser = tiny_denoiser(4)
    schedule = LogLinearSchedule()
    law = enumerate_law(denoiser, schedule, 2, 4, 3, 3)
    x = confidence_sample(denoiser, schedule, num_samples=30_000, num_steps=2, seq_len=4, mask_id=3, vocab_size=3,
                          generator=torch.Generator().manual_seed(3), batch_size=4096)
    assert chi_square_pvalue(x, law) > FIT_LEVEL


def test_sampled_prob_recall_is_unavailable_with_a_reason_and_bad_input_is_named():
    assert confidence_recall_unavailable("max_prob") is None
    reason = confidence_recall_unavailable("sampled_prob")
    assert "discarded" in reason
    denoiser = tiny_denoiser(4)
    x = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="discarded"):
        confidence_recall_per_sequence(denoiser, LogLinearSchedule(), x, num_steps=2, confidence="sampled_prob")
    with pytest.raises(ValueError, match="confidence"):
        confidence_recall_unavailable("min_prob")
    kwargs = dict(num_samples=2, num_steps=2, seq_len=4, vocab_size=3)
    with pytest.raises(ValueError, match="mask_id"):
        confidence_sample(denoiser, LogLinearSchedule(), mask_id=1, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        confidence_sample(denoiser, LogLinearSchedule(), mask_id=3, temperature=0.0, **kwargs)
    with pytest.raises(ValueError, match="num_steps"):
        confidence_sample(denoiser, LogLinearSchedule(), mask_id=3, **{**kwargs, "num_steps": 0})


def test_one_token_per_step_with_the_exact_denoiser_gives_the_sources_own_law():
    """Chain-rule anchor: when no step reveals two tokens, the exact denoiser's confidence-ordered law is p(x)
    whatever the order, so the exact recall equals the true −log p(x)/L."""
    source = HiddenMarkovSource(seed=0, seq_len=6, **TINY)
    assert max(reveal_counts(LogLinearSchedule(), 16, 6)) == 1
    x = source.sample_batch(32, generator=torch.Generator().manual_seed(8))
    recall = confidence_recall_per_sequence(source.denoiser(dtype=torch.float64), LogLinearSchedule(), x,
                                            num_steps=16, mask_id=3)
    torch.testing.assert_close(recall, -source.log_prob(x) / 6, atol=1e-12, rtol=0)


def test_sampled_prob_frequencies_match_its_enumerated_law():
    """30 000 samples, L = 4, V = 3, 2 steps, against the law enumerated over every draw (cells with expected
    count < 5 pooled); seeded, false-fail rate FIT_LEVEL = 1e-3.  The max_prob law differs from it (the check
    has power to tell the two orders apart)."""
    denoiser = tiny_denoiser(4)
    schedule = LogLinearSchedule()
    law = enumerate_law(denoiser, schedule, 2, 4, 3, 3, confidence="sampled_prob")
    assert abs(sum(law.values()) - 1.0) < 1e-12
    other = enumerate_law(denoiser, schedule, 2, 4, 3, 3)
    assert sum(abs(other.get(row, 0.0) - p) for row, p in law.items()) > 0.05
    x = confidence_sample(denoiser, schedule, num_samples=30_000, num_steps=2, seq_len=4, mask_id=3, vocab_size=3,
                          generator=torch.Generator().manual_seed(6), batch_size=4096, confidence="sampled_prob")
    assert chi_square_pvalue(x, law) > FIT_LEVEL
