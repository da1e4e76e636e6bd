"""duality.forward: q_sample, reverse_unmask_prob, posterior_step, elbo_weight.

Monte Carlo tests are seeded and state their false-fail rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import duality.forward as forward_module
from duality import elbo_weight, posterior_step, q_sample, reverse_unmask_prob
from theory import CosineSchedule, LogLinearSchedule, PolynomialSchedule

K = 5
MASK = K
SCHEDULES = [LogLinearSchedule(), CosineSchedule(), PolynomialSchedule(power=3.0)]


def tokens(shape, seed, vocab_size=K):
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- q_sample


Q_SAMPLE_LEVEL = 1e-7


def q_sample_rate_ok(sample, schedule) -> bool:
    """The check behind test_q_sample_rate_is_alpha_per_sequence: `sample(x0, t, schedule, mask_id,
    generator, vocab_size=)` on 4 rows of 10 000 tokens at per-sequence t = (0, 0.25, 0.6, 0.97); True iff
    every token is x0 or the mask and each row's kept count passes an exact binomial test against α(t_b)
    at level Q_SAMPLE_LEVEL (kept = all where α = 1)."""
    x0 = tokens((4, 10_000), 1)
    t = torch.tensor([0.0, 0.25, 0.6, 0.97], dtype=torch.float64)
    z = sample(x0, t, schedule, MASK, torch.Generator().manual_seed(2), vocab_size=K)
    if not bool(((z == x0) | (z == MASK)).all()):
        return False
    for row in range(4):
        kept = int((z[row] == x0[row]).sum())
        alpha = float(schedule.alpha(float(t[row])))
        if alpha == 1.0:
            if kept != x0.shape[1]:
                return False
        elif not stats.binomtest(kept, x0.shape[1], alpha).pvalue > Q_SAMPLE_LEVEL:
            return False
    return True


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_q_sample_rate_is_alpha_per_sequence(schedule):
    """Per-sequence t: row b keeps each token with probability α(t_b).  Exact binomial test per row at
    level 1e-7 (4 rows: false-fail ≤ 4e-7 per schedule), 10 000 tokens per row."""
    assert q_sample_rate_ok(q_sample, schedule)


def _q_sample_rows_reversed(x0, t, schedule, mask_id, generator=None, vocab_size=None):
    """Planted bug: per-sequence times broadcast against the wrong rows (t read in reverse order)."""
    return q_sample(x0, t.flip(0), schedule, mask_id, generator, vocab_size=vocab_size)


def _q_sample_keeps_with_mask_rate(x0, t, schedule, mask_id, generator=None, vocab_size=None):
    """Planted bug: a token stays visible with probability 1 − α(t) instead of α(t)."""
    u = torch.rand(tuple(x0.shape), dtype=torch.float64, generator=generator)
    keep = u < torch.as_tensor(schedule.one_minus_alpha(t), dtype=torch.float64).unsqueeze(-1)
    return torch.where(keep, x0, torch.full_like(x0, mask_id))


def _q_sample_first_time_for_all_rows(x0, t, schedule, mask_id, generator=None, vocab_size=None):
    """Planted bug: a per-sequence t collapsed to its first entry (every row at t_0 = 0: nothing masked)."""
    return q_sample(x0, float(t[0]), schedule, mask_id, generator, vocab_size=vocab_size)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("bug", [_q_sample_rows_reversed, _q_sample_keeps_with_mask_rate, _q_sample_first_time_for_all_rows],
                         ids=lambda f: f.__name__)
def test_q_sample_rate_check_catches_planted_bugs(schedule, bug):
    """Each planted bug fails the check at its own size.  Not shown: a schedule 1–2 % off relative (at
    10 000 tokens per row a 2 % shift of α(0.25) ≈ 0.75 is ≈ 3.5 SE, short of the 1e-7 level)."""
    assert not q_sample_rate_ok(bug, schedule)


def test_q_sample_is_deterministic_and_independent_of_shape_of_t():
    x0 = tokens((3, 50), 4)
    a = q_sample(x0, 0.5, LogLinearSchedule(), MASK, torch.Generator().manual_seed(9))
    b = q_sample(x0, torch.full((3,), 0.5, dtype=torch.float64), LogLinearSchedule(), MASK, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_q_sample_bad_input():
    x0 = tokens((2, 3), 0)
    with pytest.raises(ValueError, match="x0"):
        q_sample(torch.tensor([0, 7]), 0.5, LogLinearSchedule(), MASK, vocab_size=K)
    with pytest.raises(ValueError, match="x0"):
        q_sample(torch.tensor([0, MASK]), 0.5, LogLinearSchedule(), MASK)
    with pytest.raises(ValueError, match="mask_id"):
        q_sample(x0, 0.5, LogLinearSchedule(), 2, vocab_size=K)
    for negative in (-1, -K):  # refused with or without vocab_size: it would be emitted as a token id
        with pytest.raises(ValueError, match="mask_id"):
            q_sample(x0, 0.5, LogLinearSchedule(), negative)
        with pytest.raises(ValueError, match="mask_id"):
            q_sample(x0, 0.5, LogLinearSchedule(), negative, vocab_size=K)
    with pytest.raises(ValueError, match="t"):
        q_sample(x0, 2.0, LogLinearSchedule(), MASK)
    with pytest.raises(ValueError, match="t"):
        q_sample(x0, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), LogLinearSchedule(), MASK)


# --------------------------------------------------------------------------- reverse_unmask_prob


@settings(max_examples=40)
@given(s=st.floats(0, 1), t=st.floats(0, 1), index=st.integers(0, len(SCHEDULES) - 1))
def test_reverse_unmask_prob_formula_and_range(s, t, index):
    schedule = SCHEDULES[index]
    s, t = min(s, t), max(s, t)
    prob = reverse_unmask_prob(schedule, s, t)
    assert 0.0 <= prob <= 1.0
    alpha_s, alpha_t = float(schedule.alpha(s)), float(schedule.alpha(t))
    if alpha_t < 1.0 - 1e-6:  # away from α_t = 1, where float64 α_s − α_t loses digits
        assert math.isclose(prob, (alpha_s - alpha_t) / (1 - alpha_t), rel_tol=1e-8, abs_tol=1e-12)
    tensor = reverse_unmask_prob(schedule, torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64))
    assert math.isclose(float(tensor[0]), prob, rel_tol=1e-12, abs_tol=1e-15)


def test_reverse_unmask_prob_composes_like_the_forward_process():
    """Staying masked from t to s equals (1 − α_s)/(1 − α_t), so it multiplies along u < s < t."""
    schedule = CosineSchedule()
    u, s, t = 0.1, 0.4, 0.9
    stay = lambda a, b: 1 - reverse_unmask_prob(schedule, a, b)  # noqa: E731
    assert math.isclose(stay(u, t), stay(u, s) * stay(s, t), rel_tol=1e-12)
    assert reverse_unmask_prob(schedule, 0.3, 0.3) == 0.0


def test_reverse_unmask_prob_bad_input():
    with pytest.raises(ValueError, match="s"):
        reverse_unmask_prob(LogLinearSchedule(), 0.6, 0.5)
    with pytest.raises(ValueError, match="t"):
        reverse_unmask_prob(LogLinearSchedule(), 0.5, 1.5)


# --------------------------------------------------------------------------- posterior_step


POSTERIOR_LEVEL = 1e-6


def unmask_rate_pvalue() -> float:
    """The check behind test_posterior_step_keeps_visible_and_unmasks_at_the_right_rate: one step 0.8 -> 0.5
    (log-linear) on 16 000 tokens through `duality.forward.posterior_step` (so a monkeypatched mutant is
    seen); asserts visible tokens stay and values are in range, and returns the exact binomial p-value of
    the unmasked count against (α_s − α_t)/(1 − α_t) (the test passes at p > POSTERIOR_LEVEL)."""
    schedule = LogLinearSchedule()
    x0 = tokens((8, 2_000), 3)
    z_t = q_sample(x0, 0.8, schedule, MASK, torch.Generator().manual_seed(4))
    probs = torch.softmax(torch.randn(8, 2_000, K, generator=torch.Generator().manual_seed(5)), dim=-1)
    z_s = forward_module.posterior_step(probs, z_t, 0.5, 0.8, schedule, MASK, torch.Generator().manual_seed(6))
    visible = z_t != MASK
    assert torch.equal(z_s[visible], z_t[visible])
    masked = ~visible
    unmasked = int((z_s[masked] != MASK).sum())
    assert bool(((z_s >= 0) & (z_s <= MASK)).all())
    prob = reverse_unmask_prob(schedule, 0.5, 0.8)
    return float(stats.binomtest(unmasked, int(masked.sum()), prob).pvalue)


def test_posterior_step_keeps_visible_and_unmasks_at_the_right_rate():
    """Unmasking count ~ Binomial(#masked, (α_s − α_t)/(1 − α_t)); exact binomial test at level 1e-6
    (false-fail ≤ 1e-6)."""
    assert unmask_rate_pvalue() > POSTERIOR_LEVEL


def test_unmask_rate_check_catches_the_wrong_denominator(monkeypatch):
    """Planted bug: unmask probability (α_s − α_t)/(1 − α_s) instead of /(1 − α_t) (0.60 instead of 0.375
    here; observed p = 0 in float64).  Not shown: a 1–2 % relative error (≈ 1.7 SE at 12 800 masked)."""

    def wrong_denominator(schedule, s, t):
        alpha_s, alpha_t = float(schedule.alpha(s)), float(schedule.alpha(t))
        return (alpha_s - alpha_t) / (1 - alpha_s)

    monkeypatch.setattr(forward_module, "reverse_unmask_prob", wrong_denominator)
    assert unmask_rate_pvalue() <= POSTERIOR_LEVEL


CATEGORY_P = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05], dtype=torch.float64)


def category_fit_pvalue() -> float:
    """The check behind test_posterior_step_draws_categories_from_the_probabilities: 30 000 masked tokens
    unmasked at s = 0 from CATEGORY_P through `duality.forward.posterior_step`; 0 if a token stays masked or
    a zero-probability category is drawn, else the chi-square goodness-of-fit p-value on the support (the
    test passes at p > POSTERIOR_LEVEL)."""
    p = CATEGORY_P
    n = 30_000
    z_t = torch.full((n,), MASK)
    z_s = forward_module.posterior_step(p.expand(n, K), z_t, 0.0, 0.7, LogLinearSchedule(), MASK, torch.Generator().manual_seed(7))
    if bool((z_s == MASK).any()):
        return 0.0
    counts = torch.bincount(z_s, minlength=K).numpy()
    if counts[1] != 0:  # zero probability is never drawn
        return 0.0
    support = p.numpy() > 0
    return float(stats.chisquare(counts[support], n * p.numpy()[support]).pvalue)


def test_posterior_step_draws_categories_from_the_probabilities():
    """Unmasked values follow p (shared across positions); chi-square goodness of fit at level 1e-6
    (false-fail ≤ 1e-6).  s = 0 with α(0) = 1: every masked token unmasks."""
    assert category_fit_pvalue() > POSTERIOR_LEVEL


_original_sample_categories = forward_module._sample_categories


def _categories_tempered(rows, uniforms, temperature, log_probs):
    """Planted bug: probabilities raised to the power 1.1 (a stray temperature 1/1.1) before the draw."""
    return _original_sample_categories(rows**1.1, uniforms, temperature, log_probs)


def _categories_read_as_log_probs(rows, uniforms, temperature, log_probs):
    """Planted bug: the log_probs flag inverted (probabilities read as logits: p = 0 gets mass)."""
    return _original_sample_categories(rows, uniforms, temperature, not log_probs)


@pytest.mark.parametrize("bug", [_categories_tempered, _categories_read_as_log_probs], ids=lambda f: f.__name__)
def test_category_check_catches_planted_bugs(monkeypatch, bug):
    """The p^1.1 perturbation (0.5 -> 0.52, 0.05 -> 0.04) is rejected at n = 30 000 with observed p ≈ 2e-19;
    reading probabilities as logits draws the zero-probability category.  Not shown: float16 rounding of
    p (p ≈ 0.46, a change far below what 30 000 draws resolve)."""
    monkeypatch.setattr(forward_module, "_sample_categories", bug)
    assert category_fit_pvalue() <= POSTERIOR_LEVEL


def temperature_fit_pvalue(temperature: float, seed: int) -> float:
    """The check behind test_posterior_step_temperature_sharpens_log_probs: 8 000 draws at `temperature`
    from seeded log p through `duality.forward.posterior_step`, chi-square p-value against
    softmax(log p / T) (the test passes at p > POSTERIOR_LEVEL)."""
    generator = torch.Generator().manual_seed(seed)
    log_p = torch.log_softmax(torch.randn(K, dtype=torch.float64, generator=generator) * 1.5, dim=-1)
    n = 8_000
    z_s = forward_module.posterior_step(log_p.expand(n, K), torch.full((n,), MASK), 0.0, 1.0, LogLinearSchedule(), MASK, generator,
                                        temperature=temperature, log_probs=True)
    expected = torch.softmax(log_p / temperature, dim=-1).numpy() * n
    counts = torch.bincount(z_s, minlength=K).numpy()
    return float(stats.chisquare(counts, expected).pvalue)


@settings(max_examples=15)
@given(temperature=st.sampled_from([0.5, 1.0, 2.0]), seed=st.integers(0, 2**31 - 1))
def test_posterior_step_temperature_sharpens_log_probs(temperature, seed):
    """Drawn frequencies match softmax(log p / T): chi-square at level 1e-6 (false-fail ≤ 1e-6 per example)."""
    assert temperature_fit_pvalue(temperature, seed) > POSTERIOR_LEVEL


@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_check_catches_temperature_inverted(monkeypatch, temperature, seed):
    """Planted bug: temperature applied as multiplication, exp(T·log p), instead of exp(log p / T).  At
    T = 1 the bug is invisible by construction; at T = 0.5 and 2 the check rejects (observed p = 0 in
    float64 for seeds 0–3)."""

    def inverted(rows, uniforms, temp, log_probs):
        return _original_sample_categories(rows, uniforms, 1.0 / temp if temp > 0 else temp, log_probs)

    monkeypatch.setattr(forward_module, "_sample_categories", inverted)
    assert temperature_fit_pvalue(temperature, seed) <= POSTERIOR_LEVEL


def test_posterior_step_zero_temperature_is_argmax_and_deterministic():
    probs = torch.softmax(torch.randn(4, 30, K, generator=torch.Generator().manual_seed(1)), dim=-1)
    z_t = torch.full((4, 30), MASK)
    z_s = posterior_step(probs, z_t, 0.0, 1.0, LogLinearSchedule(), MASK, temperature=0.0)
    assert torch.equal(z_s, probs.argmax(-1))
    a = posterior_step(probs, z_t, 0.3, 0.9, LogLinearSchedule(), MASK, torch.Generator().manual_seed(5))
    b = posterior_step(probs, z_t, 0.3, 0.9, LogLinearSchedule(), MASK, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_posterior_step_per_sequence_times():
    """Row with s = t unmasks nothing; row with s = 0 unmasks everything."""
    probs = torch.full((2, 50, K), 1.0 / K)
    z_t = torch.full((2, 50), MASK)
    s = torch.tensor([0.6, 0.0], dtype=torch.float64)
    t = torch.tensor([0.6, 0.6], dtype=torch.float64)
    z_s = posterior_step(probs, z_t, s, t, LogLinearSchedule(eps=0.0), MASK, torch.Generator().manual_seed(0))
    assert bool((z_s[0] == MASK).all()) and not bool((z_s[1] == MASK).any())


def test_posterior_step_bad_input():
    probs = torch.full((2, 3, K), 0.2)
    z_t = torch.full((2, 3), MASK)
    schedule = LogLinearSchedule()
    with pytest.raises(ValueError, match="s"):
        posterior_step(probs, z_t, 0.6, 0.5, schedule, MASK)
    with pytest.raises(ValueError, match="shape"):
        posterior_step(probs, torch.full((2, 4), MASK), 0.2, 0.5, schedule, MASK)
    with pytest.raises(ValueError, match="z_t"):
        posterior_step(probs, torch.full((2, 3), 9), 0.2, 0.5, schedule, MASK)
    with pytest.raises(ValueError, match="mask_id"):
        posterior_step(probs, z_t, 0.2, 0.5, schedule, 1)
    with pytest.raises(ValueError, match="mask_id"):
        posterior_step(probs, torch.full((2, 3), -1), 0.2, 0.5, schedule, -1)
    with pytest.raises(ValueError, match="temperature"):
        posterior_step(probs, z_t, 0.2, 0.5, schedule, MASK, temperature=-1.0)
    with pytest.raises(ValueError, match="x0_probs"):
        posterior_step(-probs, z_t, 0.0, 0.5, schedule, MASK)
    with pytest.raises(ValueError, match="x0_probs"):
        posterior_step(torch.full((2, 3, K), float("nan")), z_t, 0.0, 0.5, schedule, MASK)
    with pytest.raises(ValueError, match="t"):
        posterior_step(probs, z_t, 0.2, 1.5, schedule, MASK)


# --------------------------------------------------------------------------- elbo_weight


@settings(max_examples=30)
@given(t=st.floats(1e-6, 1.0), index=st.integers(0, len(SCHEDULES) - 1))
def test_elbo_weight_is_minus_alpha_deriv_over_mask_rate(t, index):
    schedule = SCHEDULES[index]
    expected = -float(schedule.alpha_deriv(t)) / float(schedule.one_minus_alpha(t))
    assert math.isclose(elbo_weight(schedule, t), expected, rel_tol=1e-9)
    tensor = elbo_weight(schedule, torch.tensor([t], dtype=torch.float64))
    assert math.isclose(float(tensor[0]), expected, rel_tol=1e-9)


def test_elbo_weight_loglinear_is_one_over_t_and_infinite_at_zero():
    """For α = 1 − (1 − ε)t: −α′/(1 − α) = (1 − ε)/((1 − ε)t) = 1/t."""
    t = np.array([0.01, 0.3, 1.0])
    got = elbo_weight(LogLinearSchedule(), torch.from_numpy(t))
    np.testing.assert_allclose(got.numpy(), 1 / t, rtol=1e-12)
    assert elbo_weight(LogLinearSchedule(), 0.0) == math.inf
    with pytest.raises(ValueError, match="t"):
        elbo_weight(LogLinearSchedule(), -0.5)
