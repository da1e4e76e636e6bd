"""Calibrated statistical assertions: every test states its false-fail rate and its power.

Each test here is a decision rule "pass iff statistic <= threshold" with two stated numbers:

- false_fail_rate δ: P(fail | the claim is true) <= δ, exactly or by a finite-sample bound
  (never an asymptotic approximation unless the method name says "clt");
- detectable_discrepancy Δ at false-pass rate β: if the truth differs from the claim by at least
  Δ (in the stated sense) then P(pass) <= β.

Methods (formulas in each docstring):

- DKW (Dvoretzky–Kiefer–Wolfowitz, Massart's constant): sup_x |F̂_n(x) − F(x)| > ε with
  probability <= 2·exp(−2nε²), so ε_δ = sqrt(log(2/δ)/(2n)); simultaneous over every x.
- Exact binomial: two-sided equal-tail acceptance region [lo, hi] of Bin(n, p).
- Hoeffding: bounded variables; a two-sample difference of means.
- Zero-violation: a property that must hold for every draw; one violation refutes it (δ = 0).
- Clopper–Pearson: exact binomial confidence bounds.
- Bernstein: bounded variables with a known variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

from sampler.data.metrics import json_ready
from theory.checks import check_int

__all__ = [
    "TestResult",
    "check_rate",
    "bonferroni",
    "dkw_epsilon",
    "dkw_detectable",
    "dkw_test",
    "binomial_acceptance",
    "binomial_pass_probability",
    "binomial_detectable",
    "binomial_test",
    "two_sample_hoeffding_threshold",
    "two_sample_detectable",
    "two_sample_test",
    "zero_violation_test",
    "clopper_pearson",
    "positive_rate_test",
    "bernstein_deviation",
    "bernstein_test",
    "tolerance_test",
    "empirical_bernstein_deviation",
    "empirical_bernstein_test",
    "binomial_family_test",
    "binomial_acceptance_many",
    "binomial_detectable_many",
]


def check_rate(value: Any, name: str) -> float:
    """A probability in (0, 1); ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return value


_check_count = check_int


def _check_probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass
class TestResult:
    """One calibrated decision: pass iff `statistic <= threshold` (or >= when comparison is ">=").

    false_fail_rate: bound on P(fail | claim true).  detectable_discrepancy: the smallest
    discrepancy (in `discrepancy_unit`) that makes P(pass) <= false_pass_rate; None where the
    notion does not apply (deterministic checks); inf where no discrepancy is detectable.
    """

    name: str
    method: str
    statistic: float
    threshold: float
    passed: bool
    n: int
    false_fail_rate: float
    false_pass_rate: float | None
    detectable_discrepancy: float | None
    discrepancy_unit: str = "absolute probability"
    details: dict[str, Any] = field(default_factory=dict)
    comparison: str = "<="  # pass iff statistic <= threshold (">=": pass iff statistic >= threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "statistic": jsonable(self.statistic),
            "threshold": jsonable(self.threshold),
            "passed": bool(self.passed),
            "n": int(self.n),
            "false_fail_rate": jsonable(self.false_fail_rate),
            "false_pass_rate": jsonable(self.false_pass_rate),
            "detectable_discrepancy": jsonable(self.detectable_discrepancy),
            "discrepancy_unit": self.discrepancy_unit,
            "comparison": self.comparison,
            "details": jsonable(self.details),
        }


def jsonable(value: Any) -> Any:
    """value as strict JSON data (sampler.data.json_ready: numpy arrays as lists, NaN and ±inf as null)."""
    return json_ready(value, keep_tensors=True)


def bonferroni(delta: float, count: int) -> float:
    """δ / count: the per-test false-fail rate that keeps the family's rate <= δ (union bound)."""
    delta = check_rate(delta, "delta")
    count = _check_count(count, "count")
    return delta / count


# --------------------------------------------------------------------------- DKW


def dkw_epsilon(n: int, delta: float) -> float:
    """ε_δ = sqrt(log(2/δ)/(2n)): P(sup_x |F̂_n(x) − F(x)| > ε_δ) <= δ (DKW with Massart's constant)."""
    n = _check_count(n, "n")
    delta = check_rate(delta, "delta")
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def dkw_detectable(n: int, delta: float, beta: float) -> float:
    """Δ = ε_δ + sqrt(log(1/β)/(2n)).

    If the true CDF G differs from the claimed F by Δ at some checked point x, passing needs
    |F̂(x) − F(x)| <= ε_δ, i.e. F̂(x) deviates from G(x) by >= Δ − ε_δ in one known direction;
    by Hoeffding that has probability <= exp(−2n(Δ − ε_δ)²) = β.
    """
    beta = check_rate(beta, "beta")
    return dkw_epsilon(n, delta) + math.sqrt(math.log(1.0 / beta) / (2.0 * n))


def dkw_test(
    name: str,
    empirical: np.ndarray,
    claimed: np.ndarray,
    n: int,
    delta: float,
    beta: float,
    details: dict[str, Any] | None = None,
) -> TestResult:
    """Pass iff max_i |empirical_i − claimed_i| <= ε_δ, where empirical_i = F̂_n(x_i) is the
    empirical CDF (or survival function) of n iid draws at any set of points x_i."""
    empirical = np.asarray(empirical, dtype=np.float64)
    claimed = np.asarray(claimed, dtype=np.float64)
    if empirical.shape != claimed.shape:
        raise ValueError(f"empirical has shape {empirical.shape} but claimed has shape {claimed.shape}")
    if np.isnan(claimed).any():
        raise ValueError(f"claimed contains NaN (test {name!r})")
    statistic = float(np.max(np.abs(empirical - claimed))) if empirical.size else 0.0
    threshold = dkw_epsilon(n, delta)
    return TestResult(
        name=name,
        method="DKW",
        statistic=float(statistic),
        threshold=float(threshold),
        passed=bool(statistic <= threshold),
        n=n,
        false_fail_rate=delta,
        false_pass_rate=beta,
        detectable_discrepancy=dkw_detectable(n, delta, beta),
        details=details or {},
    )


# ---------------------------------------------------------------------- binomial


def binomial_acceptance_many(n: np.ndarray, p: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `binomial_acceptance` (arrays of n and p, one δ)."""
    delta = check_rate(delta, "delta")
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    dist = _scipy_stats.binom(n, p)
    half = delta / 2.0
    # lo = smallest k with cdf(k) > δ/2, so P(X < lo) = cdf(lo − 1) <= δ/2
    lo = np.asarray(dist.ppf(half), dtype=np.float64)
    lo = np.where(np.isnan(lo), 0, lo).astype(np.int64)
    for _ in range(3):  # guard against rounding of ppf in either direction
        lo = np.where((lo > 0) & (dist.cdf(lo - 1) > half), lo - 1, lo)
        lo = np.where((lo < n) & (dist.cdf(lo) <= half), lo + 1, lo)
    # hi = smallest k with sf(k) <= δ/2, so P(X > hi) <= δ/2
    hi = np.asarray(dist.isf(half), dtype=np.float64)
    hi = np.where(np.isnan(hi), n, hi).astype(np.int64)
    for _ in range(3):
        hi = np.where((hi > 0) & (dist.sf(hi - 1) <= half), hi - 1, hi)
        hi = np.where((hi < n) & (dist.sf(hi) > half), hi + 1, hi)
    return np.clip(lo, 0, n), np.clip(hi, 0, n)


def binomial_acceptance(n: int, p: float, delta: float) -> tuple[int, int]:
    """Equal-tail acceptance region [lo, hi] of X ~ Bin(n, p): the narrowest with
    P(X < lo) <= δ/2 and P(X > hi) <= δ/2, so P(X ∉ [lo, hi]) <= δ exactly (not asymptotically)."""
    n = _check_count(n, "n")
    p = _check_probability(p, "p")
    lo, hi = binomial_acceptance_many(np.array([n]), np.array([p]), delta)
    return int(lo[0]), int(hi[0])


def binomial_pass_probability(n: Any, lo: Any, hi: Any, p: Any) -> Any:
    """P(lo <= X <= hi) for X ~ Bin(n, p) (vectorised)."""
    dist = _scipy_stats.binom(n, p)
    below = np.where(np.asarray(lo) > 0, dist.cdf(np.asarray(lo) - 1), 0.0)
    result = dist.cdf(hi) - below
    return float(result) if np.ndim(result) == 0 else result


def binomial_detectable_many(n: np.ndarray, p: np.ndarray, delta: float, beta: float) -> np.ndarray:
    """Vectorised `binomial_detectable`: bisection on the exact pass probability, per cell."""
    beta = check_rate(beta, "beta")
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    lo, hi = binomial_acceptance_many(n, p, delta)
    worst = np.zeros(p.shape)
    for sign in (+1.0, -1.0):
        room = (1.0 - p) if sign > 0 else p
        active = room > 0
        if not active.any():
            continue
        safe_room = np.where(active, room, 0.0)
        unreachable = active & (binomial_pass_probability(n, lo, hi, np.clip(p + sign * safe_room, 0, 1)) > beta)
        a, b = np.zeros(p.shape), safe_room.copy()
        for _ in range(50):
            mid = 0.5 * (a + b)
            ok = binomial_pass_probability(n, lo, hi, np.clip(p + sign * mid, 0.0, 1.0)) <= beta
            b = np.where(ok, mid, b)
            a = np.where(ok, a, mid)
        value = np.where(unreachable, np.inf, b)
        worst = np.where(active, np.maximum(worst, value), worst)
    return worst


def binomial_detectable(n: int, p: float, delta: float, beta: float) -> float:
    """Smallest Δ such that P(pass | true probability p + Δ) <= β and P(pass | p − Δ) <= β
    (each direction that stays inside [0, 1]; the larger of the two), found by bisection on the
    exact binomial pass probability."""
    n = _check_count(n, "n")
    p = _check_probability(p, "p")
    return float(binomial_detectable_many(np.array([n]), np.array([p]), delta, beta)[0])


def binomial_test(
    name: str,
    successes: int,
    n: int,
    p: float,
    delta: float,
    beta: float,
    details: dict[str, Any] | None = None,
) -> TestResult:
    """Exact two-sided binomial test of P(success) = p: pass iff successes ∈ [lo, hi].

    Reported statistic |p̂ − p| and threshold: the half-width max(p − lo/n, hi/n − p)."""
    successes = _check_count(successes, "successes", 0)
    n = _check_count(n, "n")
    if successes > n:
        raise ValueError(f"successes must be <= n={n}, got {successes}")
    lo, hi = binomial_acceptance(n, p, delta)
    p_hat = successes / n
    passed = bool(lo <= successes <= hi)
    half_width = max(p - lo / n, hi / n - p)
    statistic = abs(p_hat - p)
    if not passed:  # keep "statistic <= threshold" equivalent to "passed"
        statistic = max(statistic, half_width + 1e-15)
    elif statistic > half_width:
        half_width = statistic
    info = {"p_claimed": p, "p_hat": p_hat, "successes": successes, "acceptance": [lo, hi]}
    info.update(details or {})
    return TestResult(
        name=name,
        method="exact binomial",
        statistic=statistic,
        threshold=half_width,
        passed=passed,
        n=n,
        false_fail_rate=delta,
        false_pass_rate=beta,
        detectable_discrepancy=binomial_detectable(n, p, delta, beta),
        details=info,
    )


# ------------------------------------------------------------------- two-sample


def two_sample_hoeffding_threshold(n: int, m: int, delta: float) -> float:
    """x with P(|p̂_1 − p̂_2| >= x) <= δ when both estimate the same p from n and m indicators:
    Hoeffding for the difference, x = sqrt(log(2/δ)·(1/n + 1/m)/2)."""
    n = _check_count(n, "n")
    m = _check_count(m, "m")
    delta = check_rate(delta, "delta")
    return math.sqrt(math.log(2.0 / delta) * (1.0 / n + 1.0 / m) / 2.0)


def two_sample_detectable(n: int, m: int, delta: float, beta: float) -> float:
    """Δ = threshold + sqrt(log(1/β)·(1/n + 1/m)/2): with true difference Δ, passing needs the
    difference of means to fall short of its mean by Δ − threshold (one-sided Hoeffding <= β)."""
    beta = check_rate(beta, "beta")
    return two_sample_hoeffding_threshold(n, m, delta) + math.sqrt(math.log(1.0 / beta) * (1.0 / n + 1.0 / m) / 2.0)


def two_sample_test(
    name: str,
    p_hat_1: np.ndarray,
    p_hat_2: np.ndarray,
    n: int,
    m: int,
    delta: float,
    beta: float,
    details: dict[str, Any] | None = None,
) -> TestResult:
    """Pass iff max_i |p̂_1,i − p̂_2,i| <= Hoeffding threshold at δ / (number of points)
    (Bonferroni over the points: frequencies of events i, each from two independent samples)."""
    a = np.asarray(p_hat_1, dtype=np.float64)
    b = np.asarray(p_hat_2, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"p_hat_1 and p_hat_2 must be non-empty with equal shapes, got {a.shape} and {b.shape}")
    per_point = bonferroni(delta, a.size)
    statistic = float(np.max(np.abs(a - b)))
    threshold = two_sample_hoeffding_threshold(n, m, per_point)
    return TestResult(
        name=name,
        method="two-sample Hoeffding (Bonferroni over points)",
        statistic=float(statistic),
        threshold=float(threshold),
        passed=bool(statistic <= threshold),
        n=n + m,
        false_fail_rate=delta,
        false_pass_rate=beta,
        detectable_discrepancy=two_sample_detectable(n, m, per_point, beta),
        details=details or {},
    )


# ------------------------------------------------------------- universal claims


def zero_violation_test(name: str, violations: int, n: int, beta: float, details: dict[str, Any] | None = None) -> TestResult:
    """A property that must hold on every draw: pass iff there are no violations.

    False-fail rate 0 (a true property never produces a violation).  Detectable discrepancy: the
    smallest violation frequency r with P(no violation in n draws) = (1 − r)^n <= β,
    r = 1 − β^{1/n}."""
    violations = _check_count(violations, "violations", 0)
    n = _check_count(n, "n")
    beta = check_rate(beta, "beta")
    return TestResult(
        name=name,
        method="zero-violation (exact)",
        statistic=float(violations),
        threshold=0.0,
        passed=violations == 0,
        n=n,
        false_fail_rate=0.0,
        false_pass_rate=beta,
        detectable_discrepancy=-math.expm1(math.log(beta) / n),
        discrepancy_unit="violation frequency",
        details={"violations": violations, **(details or {})},
    )


def clopper_pearson(successes: int, n: int, delta: float) -> tuple[float, float]:
    """Exact two-sided (1 − δ) confidence interval for a binomial probability."""
    successes = _check_count(successes, "successes", 0)
    n = _check_count(n, "n")
    delta = check_rate(delta, "delta")
    lower = 0.0 if successes == 0 else float(_scipy_stats.beta.ppf(delta / 2.0, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(_scipy_stats.beta.isf(delta / 2.0, successes + 1, n - successes))
    return lower, upper


def positive_rate_test(
    name: str, successes: int, n: int, delta: float, beta: float, details: dict[str, Any] | None = None
) -> TestResult:
    """Claim "the event has probability r > 0": pass iff the one-sided Clopper–Pearson lower
    bound at level δ is > 0, i.e. iff at least one event occurs.

    False-pass rate (claim false, r = 0): exactly 0, an event of probability 0 never occurs.
    False-fail rate: (1 − r)^n, <= δ for every r >= r_min = 1 − δ^{1/n} (reported in details and
    as `detectable_discrepancy`: the smallest rate this test confirms with failure rate <= δ)."""
    successes = _check_count(successes, "successes", 0)
    n = _check_count(n, "n")
    delta = check_rate(delta, "delta")
    r_min = -math.expm1(math.log(delta) / n)
    lower = 0.0 if successes == 0 else float(_scipy_stats.beta.ppf(delta, successes, n - successes + 1))
    p_hat = successes / n
    info = {"rate": p_hat, "cp_lower": lower, "smallest_rate_confirmed": r_min, "successes": successes}
    info.update(details or {})
    return TestResult(
        name=name,
        method="one-sided Clopper-Pearson lower bound > 0",
        statistic=float(successes),
        threshold=1.0,
        passed=successes > 0,
        comparison=">=",
        n=n,
        false_fail_rate=delta,
        false_pass_rate=0.0,
        detectable_discrepancy=r_min,
        discrepancy_unit="smallest true rate confirmed (false-fail <= δ)",
        details=info,
    )


# -------------------------------------------------------------------- Bernstein


def bernstein_deviation(variance_sum: float, bound: float, delta: float) -> float:
    """x with P(|S| >= x) <= δ for S a sum of independent zero-mean terms |X_j| <= bound,
    Σ Var X_j = variance_sum (Bernstein): solve x²/(2(V + bx/3)) = log(2/δ),
    x = b·L/3 + sqrt((b·L/3)² + 2·V·L), L = log(2/δ)."""
    delta = check_rate(delta, "delta")
    if variance_sum < 0 or bound < 0:
        raise ValueError(f"variance_sum and bound must be >= 0, got {variance_sum!r}, {bound!r}")
    log_term = math.log(2.0 / delta)
    a = bound * log_term / 3.0
    return a + math.sqrt(a * a + 2.0 * variance_sum * log_term)


def bernstein_test(
    name: str,
    estimate: float,
    claimed: float,
    variance_sum: float,
    bound: float,
    n: int,
    delta: float,
    beta: float,
    unit: str = "absolute",
    details: dict[str, Any] | None = None,
) -> TestResult:
    """Pass iff |estimate − claimed| <= Bernstein deviation at δ (two-sided).
    Detectable: threshold + one-sided Bernstein deviation at β (same variance, bound)."""
    threshold = bernstein_deviation(variance_sum, bound, delta)
    detect = threshold + bernstein_deviation(variance_sum, bound, min(2.0 * beta, 0.999))
    info = {"variance_sum": variance_sum, "bound": bound, **(details or {})}
    return _mean_deviation_result(name, "Bernstein (exact variance)", estimate, claimed, threshold, detect, n, delta, beta, unit, info)


def _mean_deviation_result(
    name: str,
    method: str,
    estimate: float,
    claimed: float,
    threshold: float,
    detect: float,
    n: int,
    delta: float,
    beta: float,
    unit: str,
    info: dict[str, Any],
) -> TestResult:
    """The result of a two-sided deviation test: pass iff |estimate − claimed| <= threshold."""
    statistic = abs(float(estimate) - float(claimed))
    return TestResult(
        name=name,
        method=method,
        statistic=float(statistic),
        threshold=float(threshold),
        passed=bool(statistic <= threshold),
        n=n,
        false_fail_rate=delta,
        false_pass_rate=beta,
        detectable_discrepancy=detect,
        discrepancy_unit=unit,
        details={"estimate": float(estimate), "claimed": float(claimed), **info},
    )


def empirical_bernstein_deviation(sample_variance: float, value_range: float, n: int, delta: float) -> float:
    """Maurer–Pontil empirical Bernstein bound, two-sided: with probability >= 1 − δ,
    |mean − E| <= sqrt(2·V_n·log(4/δ)/n) + 7·R·log(4/δ)/(3(n − 1)),
    V_n the unbiased sample variance of n iid values in an interval of length R."""
    n = _check_count(n, "n", 2)
    delta = check_rate(delta, "delta")
    log_term = math.log(4.0 / delta)
    return math.sqrt(2.0 * sample_variance * log_term / n) + 7.0 * value_range * log_term / (3.0 * (n - 1))


def empirical_bernstein_test(
    name: str,
    mean: float,
    claimed: float,
    sample_variance: float,
    value_range: float,
    n: int,
    delta: float,
    beta: float,
    bias_bound: float = 0.0,
    unit: str = "absolute",
    details: dict[str, Any] | None = None,
) -> TestResult:
    """Pass iff |mean − claimed| <= empirical Bernstein deviation at δ + bias_bound (a known bound
    on |E[estimator] − claimed| under the claim, e.g. from clipping).  Detectable: threshold +
    the same deviation at 2β (one-sided)."""
    threshold = empirical_bernstein_deviation(sample_variance, value_range, n, delta) + bias_bound
    detect = threshold + empirical_bernstein_deviation(sample_variance, value_range, n, min(2.0 * beta, 0.999))
    info = {"sample_variance": float(sample_variance), "range": value_range, **(details or {})}
    return _mean_deviation_result(name, "empirical Bernstein (Maurer-Pontil)", mean, claimed, threshold, detect, n, delta, beta, unit, info)


def binomial_family_test(
    name: str,
    successes: np.ndarray,
    trials: np.ndarray,
    claimed: np.ndarray,
    delta: float,
    beta: float,
    labels: list[str] | None = None,
    details: dict[str, Any] | None = None,
) -> TestResult:
    """m exact binomial tests at δ/m each (Bonferroni), reported as one: pass iff every count lies
    in its acceptance region.  statistic = max_i |p̂_i − p_i| / half-width_i, threshold 1;
    detectable = the largest per-cell exact detectable discrepancy (absolute probability)."""
    successes = np.asarray(successes, dtype=np.int64).reshape(-1)
    trials = np.asarray(trials, dtype=np.int64).reshape(-1)
    claimed = np.asarray(claimed, dtype=np.float64).reshape(-1)
    if not (successes.shape == trials.shape == claimed.shape) or successes.size == 0:
        raise ValueError(f"successes, trials, claimed must be non-empty with equal sizes, got {successes.shape}, {trials.shape}, {claimed.shape}")
    if np.isnan(claimed).any() or (claimed < 0).any() or (claimed > 1).any():
        raise ValueError(f"claimed probabilities must lie in [0, 1] (test {name!r}), got {claimed.tolist()}")
    if (successes < 0).any() or (successes > trials).any():
        raise ValueError(f"successes must lie in [0, trials] (test {name!r})")
    used = trials > 0
    per = bonferroni(delta, successes.size)
    k, n_used, p = successes[used], trials[used], claimed[used]
    lo, hi = binomial_acceptance_many(n_used, p, per)
    cell_passed = (lo <= k) & (k <= hi)
    p_hat = k / n_used
    half = np.maximum(p - lo / n_used, hi / n_used - p)
    deviation = np.abs(p_hat - p)
    ratio = np.where(half > 0, deviation / np.where(half > 0, half, 1.0), np.where(deviation == 0, 0.0, np.inf))
    passed = bool(cell_passed.all())
    statistic = float(ratio.max()) if ratio.size else 0.0
    if not passed:
        statistic = max(statistic, 1.0 + 1e-12)
    else:
        statistic = min(statistic, 1.0)
    detect = binomial_detectable_many(n_used, p, per, beta) if ratio.size else np.array([math.inf])
    names = [labels[i] for i in np.flatnonzero(used)] if labels else [str(i) for i in np.flatnonzero(used)]
    cells = [{"label": names[i], "n": int(n_used[i]), "p_claimed": float(p[i]), "p_hat": float(p_hat[i]),
              "acceptance": [int(lo[i]), int(hi[i])], "passed": bool(cell_passed[i])} for i in range(len(names))]
    return TestResult(
        name=name,
        method=f"exact binomial x{successes.size} (Bonferroni)",
        statistic=statistic,
        threshold=1.0,
        passed=passed,
        n=int(trials.sum()),
        false_fail_rate=delta,
        false_pass_rate=beta,
        detectable_discrepancy=float(detect.max()),
        details={"cells": cells, "statistic_unit": "max |p_hat - p| / acceptance half-width", **(details or {})},
    )


# ---------------------------------------------------------------- deterministic


def tolerance_test(name: str, error: float, tolerance: float, details: dict[str, Any] | None = None, unit: str = "absolute") -> TestResult:
    """Deterministic numerical check: pass iff error <= tolerance (no randomness, δ = 0)."""
    error = float(error)
    return TestResult(
        name=name,
        method="numerical tolerance",
        statistic=error,
        threshold=float(tolerance),
        passed=bool(error <= tolerance),
        n=0,
        false_fail_rate=0.0,
        false_pass_rate=None,
        detectable_discrepancy=float(tolerance),
        discrepancy_unit=unit,
        details=details or {},
    )
