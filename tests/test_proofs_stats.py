"""The calibrated statistics of proofs_checks.stats: stated false-fail rates hold, detectable
discrepancies are consistent with the exact pass probabilities, bad input is refused.

Exact properties are checked by computing binomial probabilities exactly (no randomness).
Simulation tests are seeded; each states its own false-fail rate in its docstring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from proofs_checks import stats

rates = st.floats(min_value=1e-6, max_value=0.3)
probabilities = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), p=probabilities, delta=rates)
def test_binomial_acceptance_is_exact_and_narrowest(n: int, p: float, delta: float) -> None:
    lo, hi = stats.binomial_acceptance(n, p, delta)
    dist = scipy_stats.binom(n, p)
    below = dist.cdf(lo - 1) if lo > 0 else 0.0
    above = dist.sf(hi)
    assert below <= delta / 2 * (1 + 1e-9)
    assert above <= delta / 2 * (1 + 1e-9)
    # narrowest: moving either end inwards breaks its tail bound
    if lo < n:
        assert dist.cdf(lo) > delta / 2 * (1 - 1e-9) or lo == hi
    if hi > 0:
        assert dist.sf(hi - 1) > delta / 2 * (1 - 1e-9) or lo == hi


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 3000), p=st.floats(0.02, 0.98), delta=st.floats(1e-6, 0.2), beta=st.floats(1e-4, 0.2))
def test_binomial_detectable_is_consistent(n: int, p: float, delta: float, beta: float) -> None:
    """At p ± Δ (inside [0, 1]) the exact pass probability is <= β; at p ± 0.98Δ it is not for
    at least one direction (Δ is the smallest such, up to the bisection tolerance)."""
    delta_detect = stats.binomial_detectable(n, p, delta, beta)
    lo, hi = stats.binomial_acceptance(n, p, delta)
    if math.isinf(delta_detect):
        # no shift is detectable: even the farthest true probability in some direction passes too often
        at_ends = [stats.binomial_pass_probability(n, lo, hi, q) for q in (0.0, 1.0)]
        assert max(at_ends) > beta
    else:
        passes = [stats.binomial_pass_probability(n, lo, hi, q) for q in (p + delta_detect, p - delta_detect) if 0 <= q <= 1]
        assert passes and max(passes) <= beta * (1 + 1e-6) + 1e-12
        smaller = 0.98 * delta_detect
        closer = [stats.binomial_pass_probability(n, lo, hi, q) for q in (p + smaller, p - smaller) if 0 <= q <= 1]
        assert max(closer) > beta * (1 - 1e-6)


def test_binomial_false_fail_rate_on_simulated_data() -> None:
    """20 000 seeded simulations per (n, p) at δ = 0.1: the rejection frequency stays below
    δ + 4.5 standard errors (this test's own false-fail rate < 1e-5 per case)."""
    rng = np.random.default_rng(1)
    delta, sims = 0.1, 20_000
    for n, p in [(7, 0.3), (40, 0.5), (200, 0.05), (1000, 0.9)]:
        lo, hi = stats.binomial_acceptance(n, p, delta)
        draws = rng.binomial(n, p, size=sims)
        rate = float(((draws < lo) | (draws > hi)).mean())
        assert rate <= delta + 4.5 * math.sqrt(delta * (1 - delta) / sims)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 200), seed=st.integers(0, 10_000))
def test_dkw_false_fail_rate_on_simulated_data(n: int, seed: int) -> None:
    """The exact Kolmogorov–Smirnov distance of n uniforms exceeds ε_δ (δ = 0.2) in at most
    δ + 4.5 standard errors of 4000 seeded simulations (false-fail of this test < 1e-5)."""
    rng = np.random.default_rng(seed)
    delta, sims = 0.2, 4000
    eps = stats.dkw_epsilon(n, delta)
    u = np.sort(rng.random((sims, n)), axis=1)
    i = np.arange(1, n + 1)
    ks = np.maximum((i / n - u).max(axis=1), (u - (i - 1) / n).max(axis=1))
    assert float((ks > eps).mean()) <= delta + 4.5 * math.sqrt(delta * (1 - delta) / sims)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(10, 5000), f=st.floats(0.05, 0.95), delta=st.floats(1e-8, 0.1), beta=st.floats(1e-4, 0.1))
def test_dkw_detectable_is_consistent(n: int, f: float, delta: float, beta: float) -> None:
    """If the truth at one point is F + Δ (Δ = dkw_detectable), the exact probability that the
    empirical value lands within ε_δ of F is <= β (checked exactly with the binomial law)."""
    eps = stats.dkw_epsilon(n, delta)
    detect = stats.dkw_detectable(n, delta, beta)
    for truth in (f + detect, f - detect):
        if not 0 <= truth <= 1:
            continue
        lo, hi = math.ceil(n * (f - eps) - 1e-9), math.floor(n * (f + eps) + 1e-9)
        pass_probability = stats.binomial_pass_probability(n, max(lo, 0), min(hi, n), truth) if lo <= hi else 0.0
        assert pass_probability <= beta * (1 + 1e-9)


def test_two_sample_false_fail_rate_on_simulated_data() -> None:
    """Two samples of the same Bernoulli(p): |p̂_1 − p̂_2| exceeds the δ = 0.1 threshold in at most
    δ + 4.5 standard errors of 20 000 seeded simulations (false-fail < 1e-5 per case)."""
    rng = np.random.default_rng(2)
    delta, sims = 0.1, 20_000
    for n, m, p in [(30, 50, 0.4), (500, 500, 0.1)]:
        threshold = stats.two_sample_hoeffding_threshold(n, m, delta)
        diff = np.abs(rng.binomial(n, p, sims) / n - rng.binomial(m, p, sims) / m)
        assert float((diff > threshold).mean()) <= delta + 4.5 * math.sqrt(delta * (1 - delta) / sims)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(10, 2000), p=st.floats(0.05, 0.95), delta=st.floats(1e-8, 0.1), beta=st.floats(1e-4, 0.1))
def test_two_sample_detectable_is_consistent(n: int, p: float, delta: float, beta: float) -> None:
    """With a true difference Δ = two_sample_detectable, the exact probability that the two
    estimates differ by at most the threshold is <= β (exact convolution of two binomials)."""
    threshold = stats.two_sample_hoeffding_threshold(n, n, delta)
    detect = stats.two_sample_detectable(n, n, delta, beta)
    q = p + detect
    assume(q <= 1)  # hypothesis draws other (p, n) instead; too many rejections fail the test
    k = np.arange(n + 1)
    a, b = scipy_stats.binom.pmf(k, n, q), scipy_stats.binom.pmf(k, n, p)
    diff = np.abs(k[:, None] - k[None, :]) / n
    pass_probability = float((a[:, None] * b[None, :])[diff <= threshold + 1e-12].sum())
    assert pass_probability <= beta * (1 + 1e-9)


def test_bernstein_false_fail_rate_on_simulated_data() -> None:
    """Means of 50 skewed bounded variables with known variance: the Bernstein deviation at δ = 0.1
    is exceeded in at most δ + 4.5 s.e. of 20 000 seeded simulations (false-fail < 1e-5)."""
    rng = np.random.default_rng(3)
    delta, sims, n, p = 0.1, 20_000, 50, 0.05
    deviation = stats.bernstein_deviation(n * p * (1 - p), 1.0, delta)
    sums = rng.binomial(n, p, sims) - n * p
    assert float((np.abs(sums) >= deviation).mean()) <= delta + 4.5 * math.sqrt(delta * (1 - delta) / sims)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10**6), beta=rates)
def test_zero_violation_detectable_frequency(n: int, beta: float) -> None:
    result = stats.zero_violation_test("x", 0, n, beta)
    assert result.passed and result.false_fail_rate == 0.0
    r = result.detectable_discrepancy
    assert math.isclose(math.exp(n * math.log1p(-r)), beta, rel_tol=1e-6)
    assert not stats.zero_violation_test("x", 1, n, beta).passed


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), k=st.integers(0, 500), delta=st.floats(1e-6, 0.3))
def test_clopper_pearson_tails(n: int, k: int, delta: float) -> None:
    k = min(k, n)
    lower, upper = stats.clopper_pearson(k, n, delta)
    assert 0.0 <= lower <= k / n <= upper <= 1.0
    if k > 0:  # at the lower bound, P(X >= k) = δ/2
        assert math.isclose(scipy_stats.binom.sf(k - 1, n, lower), delta / 2, rel_tol=1e-5)
    if k < n:
        assert math.isclose(scipy_stats.binom.cdf(k, n, upper), delta / 2, rel_tol=1e-5)


def test_positive_rate_test_decides_on_any_event() -> None:
    assert not stats.positive_rate_test("r", 0, 1000, 1e-6, 1e-3).passed
    result = stats.positive_rate_test("r", 3, 1000, 1e-6, 1e-3)
    assert result.passed and result.false_pass_rate == 0.0
    # r_min: the rate at which P(no event) = δ
    assert math.isclose((1 - result.detectable_discrepancy) ** 1000, 1e-6, rel_tol=1e-6)


def test_dkw_and_family_tests_decide_by_threshold() -> None:
    good = stats.dkw_test("d", np.array([0.5, 0.7]), np.array([0.5, 0.7]), 10_000, 1e-6, 1e-3)
    bad = stats.dkw_test("d", np.array([0.5, 0.8]), np.array([0.5, 0.7]), 10_000, 1e-6, 1e-3)
    assert good.passed and not bad.passed and bad.statistic > bad.threshold
    family = stats.binomial_family_test("f", np.array([500, 300]), np.array([1000, 1000]), np.array([0.5, 0.3]), 1e-6, 1e-3)
    assert family.passed and family.statistic <= family.threshold
    family = stats.binomial_family_test("f", np.array([500, 400]), np.array([1000, 1000]), np.array([0.5, 0.3]), 1e-6, 1e-3)
    assert not family.passed and family.statistic > family.threshold


@pytest.mark.parametrize(
    "call",
    [
        lambda: stats.dkw_epsilon(0, 0.1),
        lambda: stats.dkw_epsilon(10, 0.0),
        lambda: stats.dkw_epsilon(10, 1.5),
        lambda: stats.binomial_acceptance(10, 1.2, 0.1),
        lambda: stats.binomial_test("b", 11, 10, 0.5, 0.1, 0.1),
        lambda: stats.bonferroni(0.1, 0),
        lambda: stats.dkw_test("d", np.array([0.1]), np.array([float("nan")]), 10, 0.1, 0.1),
        lambda: stats.binomial_family_test("f", np.array([1]), np.array([2]), np.array([float("nan")]), 0.1, 0.1),
        lambda: stats.zero_violation_test("z", -1, 10, 0.1),
    ],
)
def test_bad_input_is_refused(call) -> None:
    with pytest.raises(ValueError):
        call()
