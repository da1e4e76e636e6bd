"""Tests of the floor families (sampler.floor_denoisers) and the lower envelope (sampler.quality.envelope)."""

from __future__ import annotations

import math

import pytest
import torch

from sampler.data import HiddenMarkovSource
from sampler.floor_denoisers import ScheduledTemperatureDenoiser, TopPDenoiser, top_p_log_probs
from sampler.quality.envelope import lower_envelope
from sampler.quality.recall import recall_per_sequence
from sampler.sampling import ancestral_sample
from theory.schedules import LogLinearSchedule

TINY = dict(vocab_size=5, num_states=3, topic_size=5, support=3, successors=2, stickiness=0.5, floor=0.1)


def tiny(length: int = 6):
    source = HiddenMarkovSource(seed=0, seq_len=length, **TINY)
    return source, source.denoiser(dtype=torch.float64)


def test_scheduled_temperature_is_start_at_t_one_and_end_at_t_zero_linear_between():
    source, denoiser = tiny()
    wrapped = ScheduledTemperatureDenoiser(denoiser, start=2.0, end=0.5)
    z = torch.full((3, 6), 5)
    z[0, 2] = 1
    base = denoiser(z, torch.zeros(3))
    for t, temperature in ((1.0, 2.0), (0.0, 0.5), (0.25, 0.875)):
        expected = torch.log_softmax(base / temperature, dim=-1)
        got = wrapped(z, torch.full((3,), t, dtype=torch.float64))
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    per_row = wrapped(z, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))  # each row its own time
    torch.testing.assert_close(per_row[1], torch.log_softmax(base[1] / 1.25, dim=-1), atol=1e-12, rtol=0)
    assert wrapped.describe() == {"family": "temperature_schedule", "start": 2.0, "end": 0.5}


def test_scheduled_temperature_recall_is_the_recall_at_T_one_of_the_wrapped_denoiser():
    """Constant schedule T0: the same bound as the global temperature T0 (same patterns); one step with a
    schedule: −Σ_l log q_{T(1)}(x_l | all masked)/L (the one-step anchor)."""
    source, denoiser = tiny()
    schedule = LogLinearSchedule()
    x = source.sample_batch(8, generator=torch.Generator().manual_seed(1))
    constant = ScheduledTemperatureDenoiser(denoiser, start=0.7, end=0.7)
    ours = recall_per_sequence(constant, schedule, x, steps=3, k=4, mask_id=5,
                               generator=torch.Generator().manual_seed(2))
    global_t = recall_per_sequence(denoiser, schedule, x, steps=3, temperatures=(0.7,), k=4, mask_id=5,
                                   generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours, global_t, atol=1e-12, rtol=0)
    wrapped = ScheduledTemperatureDenoiser(denoiser, start=1.6, end=0.4)
    one_step = recall_per_sequence(wrapped, schedule, x, steps=1, k=1, mask_id=5)[0]
    marginals = torch.log_softmax(denoiser(torch.full_like(x, 5), torch.ones(8)) / 1.6, dim=-1)
    expected = -marginals.gather(-1, x[..., None])[..., 0].sum(1) / 6
    torch.testing.assert_close(one_step, expected, atol=1e-12, rtol=0)


def test_wrappers_refuse_cached_sampling_and_bad_arguments():
    source, denoiser = tiny()
    wrapped = ScheduledTemperatureDenoiser(denoiser, start=1.2, end=0.8)
    with pytest.raises(ValueError, match="cached"):
        ancestral_sample(wrapped, LogLinearSchedule(), num_steps=2, num_samples=2, seq_len=6, mask_id=5,
                         vocab_size=5, cached=True)
    out = ancestral_sample(wrapped, LogLinearSchedule(), num_steps=2, num_samples=4, seq_len=6, mask_id=5,
                           vocab_size=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 6) and int(out.max()) < 5
    with pytest.raises(ValueError, match="temperature"):
        ScheduledTemperatureDenoiser(denoiser, start=0.0, end=1.0)
    for bad in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="top_p"):
            TopPDenoiser(denoiser, top_p=bad)


def brute_force_top_p(probs: list[float], top_p: float) -> list[float]:
    """Sort by (−probability, id); take tokens while the mass taken so far is below top_p; renormalise."""
    order = sorted(range(len(probs)), key=lambda v: (-probs[v], v))
    kept, mass = [], 0.0
    for v in order:
        if mass >= top_p:
            break
        kept.append(v)
        mass += probs[v]
    total = sum(probs[v] for v in kept)
    return [probs[v] / total if v in kept else 0.0 for v in range(len(probs))]


def test_top_p_keeps_the_smallest_nucleus_and_renormalises():
    row = torch.tensor([0.05, 0.5, 0.15, 0.3], dtype=torch.float64).log()
    for top_p, expected in ((0.4, [0, 1, 0, 0]), (0.7, [0, 0.625, 0, 0.375]), (0.9, [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95]),
                            (1.0, [0.05, 0.5, 0.15, 0.3])):
        got = top_p_log_probs(row, top_p).exp()
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    generator = torch.Generator().manual_seed(0)
    rows = torch.softmax(torch.randn(200, 7, generator=generator, dtype=torch.float64) * 2, dim=-1)
    rows[:20, 3] = rows[:20, 5]  # ties, ordered by id
    rows = rows / rows.sum(dim=1, keepdim=True)
    for top_p in (0.3, 0.8, 0.95):
        got = top_p_log_probs(rows.log(), top_p).exp()
        expected = torch.tensor([brute_force_top_p(r.tolist(), top_p) for r in rows], dtype=torch.float64)
        torch.testing.assert_close(got, expected, atol=1e-14, rtol=0)


def test_top_p_recall_is_infinite_exactly_where_a_held_out_token_is_cut():
    """One step (every token scored at the all-masked state): the bound is +inf iff some x_l is outside its
    position's nucleus, finite otherwise, and then equals −Σ log q_top-p(x_l)/L."""
    source, denoiser = tiny()
    x = source.sample_batch(64, generator=torch.Generator().manual_seed(3))
    wrapped = TopPDenoiser(denoiser, top_p=0.6)
    recall = recall_per_sequence(wrapped, LogLinearSchedule(), x, steps=1, k=1, mask_id=5)[0]
    log_q = wrapped(torch.full_like(x, 5), torch.ones(64)).gather(-1, x[..., None])[..., 0]
    cut = torch.isneginf(log_q).any(dim=1)
    assert cut.any() and (~cut).any()
    assert torch.isposinf(recall[cut]).all()
    torch.testing.assert_close(recall[~cut], -log_q[~cut].sum(1) / 6, atol=1e-12, rtol=0)


def test_lower_envelope_keeps_exactly_the_undominated_rows():
    rows = [
        {"name": "a", "precision": 1.0, "recall": 3.0},
        {"name": "b", "precision": 2.0, "recall": 2.0},
        {"name": "c", "precision": 2.0, "recall": 2.5},   # same precision as b, worse recall: dominated
        {"name": "d", "precision": 3.0, "recall": 1.0},
        {"name": "e", "precision": 2.5, "recall": 2.0},   # same recall as b, worse precision: dominated
        {"name": "f", "precision": 3.5, "recall": 3.5},   # dominated by all of b, d
        {"name": "g", "precision": 0.5, "recall": math.inf},  # best precision, infinite recall: kept
        {"name": "h", "precision": 3.0, "recall": 1.0},   # equal to d: kept beside it
    ]
    names = [row["name"] for row in lower_envelope(rows)]
    assert names == ["g", "a", "b", "d", "h"]
    flipped = [{"p": row["recall"], "r": row["precision"], "name": row["name"]} for row in rows[:6]]
    assert [row["name"] for row in lower_envelope(flipped, x="p", y="r")] == ["d", "b", "a"]
    assert lower_envelope([]) == []
    with pytest.raises(ValueError, match=r"rows\[1\]\['recall'\]"):
        lower_envelope([{"precision": 1.0, "recall": 1.0}, {"precision": 1.0, "recall": math.nan}])
    with pytest.raises(ValueError, match="'precision' entry"):
        lower_envelope([{"recall": 1.0}])
