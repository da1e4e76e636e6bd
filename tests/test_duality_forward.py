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

from duality import elbo_weight, posterior_step, q_sample, reverse_unmask_prob
from theory import CosineSchedule, LogLinearSchedule, PolynomialSchedule

K = 5
MASK = K
SCHEDULES = [LogLinearSchedule(), CosineSchedule(), PolynomialSchedule(power=3.0)]


def tokens(shape, seed, vocab_size=K):
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- q_sample


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_q_sample_rate_is_alpha_per_sequence(schedule):
    """Per-sequence t: row b keeps each token with probability α(t_b).  Exact binomial test per row at
    level 1e-7 (4 rows: false-fail ≤ 4e-7 per schedule), 10 000 tokens per row."""
    x0 = tokens((4, 10_000), 1)
    t = torch.tensor([0.0, 0.25, 0.6, 0.97], dtype=torch.float64)
    z = q_sample(x0, t, schedule, MASK, torch.Generator().manual_seed(2), vocab_size=K)
    assert bool(((z == x0) | (z == MASK)).all())
    for row in range(4):
        kept = int((z[row] == x0[row]).sum())
        alpha = float(schedule.alpha(float(t[row])))
        if alpha == 1.0:
            assert kept == x0.shape[1]
        else:
            assert stats.binomtest(kept, x0.shape[1], alpha).pvalue > 1e-7


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


def test_posterior_step_keeps_visible_and_unmasks_at_the_right_rate():
    """Unmasking count ~ Binomial(#masked, (α_s − α_t)/(1 − α_t)); exact binomial test at level 1e-6
    (false-fail ≤ 1e-6)."""
    schedule = LogLinearSchedule()
    x0 = tokens((8, 2_000), 3)
    z_t = q_sample(x0, 0.8, schedule, MASK, torch.Generator().manual_seed(4))
    probs = torch.softmax(torch.randn(8, 2_000, K, generator=torch.Generator().manual_seed(5)), dim=-1)
    z_s = posterior_step(probs, z_t, 0.5, 0.8, schedule, MASK, torch.Generator().manual_seed(6))
    visible = z_t != MASK
    assert torch.equal(z_s[visible], z_t[visible])
    masked = ~visible
    unmasked = int((z_s[masked] != MASK).sum())
    assert bool(((z_s >= 0) & (z_s <= MASK)).all())
    prob = reverse_unmask_prob(schedule, 0.5, 0.8)
    assert stats.binomtest(unmasked, int(masked.sum()), prob).pvalue > 1e-6


def test_posterior_step_draws_categories_from_the_probabilities():
    """Unmasked values follow p (shared across positions); chi-square goodness of fit at level 1e-6
    (false-fail ≤ 1e-6).  s = 0 with α(0) = 1: every masked token unmasks."""
    p = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05], dtype=torch.float64)
    n = 30_000
    z_t = torch.full((n,), MASK)
    z_s = posterior_step(p.expand(n, K), z_t, 0.0, 0.7, LogLinearSchedule(), MASK, torch.Generator().manual_seed(7))
    assert not bool((z_s == MASK).any())
    counts = torch.bincount(z_s, minlength=K).numpy()
    assert counts[1] == 0  # zero probability is never drawn
    support = p.numpy() > 0
    assert stats.chisquare(counts[support], n * p.numpy()[support]).pvalue > 1e-6


@settings(max_examples=15)
@given(temperature=st.sampled_from([0.5, 1.0, 2.0]), seed=st.integers(0, 2**31 - 1))
def test_posterior_step_temperature_sharpens_log_probs(temperature, seed):
    """Drawn frequencies match softmax(log p / T): chi-square at level 1e-6 (false-fail ≤ 1e-6 per example)."""
    generator = torch.Generator().manual_seed(seed)
    log_p = torch.log_softmax(torch.randn(K, dtype=torch.float64, generator=generator) * 1.5, dim=-1)
    n = 8_000
    z_s = posterior_step(log_p.expand(n, K), torch.full((n,), MASK), 0.0, 1.0, LogLinearSchedule(), MASK, generator, temperature=temperature, log_probs=True)
    expected = torch.softmax(log_p / temperature, dim=-1).numpy() * n
    counts = torch.bincount(z_s, minlength=K).numpy()
    assert stats.chisquare(counts, expected).pvalue > 1e-6


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
