"""Symbolic proofs (theory.symbolic): each statement holds, and the same check rejects a wrong one.

Each test asserts on the sympy results themselves (residuals equal to 0, relations equal to
sympy's `true`), then feeds the proof a wrong formula and asserts that `holds` is False.
"""

from __future__ import annotations

import time

import sympy as sp

from theory import symbolic as S


def assert_proved(result: S.Result) -> None:
    assert result, "a proof must check something"
    for key, value in result.items():
        assert value == sp.S.Zero or value is sp.true, f"{key}: {value}"
    assert S.holds(result)


def test_holds_rejects_nonzero_and_undecided() -> None:
    assert S.holds({"a": sp.S.Zero, "b": sp.true})
    assert not S.holds({"a": sp.Integer(1)})
    assert not S.holds({"a": sp.false})
    assert not S.holds({"a": sp.StrictGreaterThan(sp.Symbol("x"), 0)})


def test_alpha_two_closed_form() -> None:
    assert_proved(S.alpha_two_closed_form())
    wrong = S.alpha_two_closed_form(claim=lambda v: S.Phi(v))
    assert wrong["derivative"] != 0 and not S.holds(wrong)


def test_alpha_at_zero_is_one_over_k() -> None:
    result = S.alpha_at_zero()
    assert_proved(result)
    assert set(result) >= {f"K={k} value" for k in (2, 3, 4, 5)}
    assert not S.holds(S.alpha_at_zero(claim=lambda k: sp.Rational(1, k - 1) if k > 2 else sp.Rational(1, 3)))


def test_alpha_limits() -> None:
    assert_proved(S.alpha_limits())
    assert not S.holds(S.alpha_limits(claim=(1, sp.Rational(1, 2))))


def test_derivative_formula_and_positivity() -> None:
    result = S.derivative_formula()
    assert_proved(result)
    assert result["positive integrand"] is sp.true
    exponent_k = S.derivative_formula(exponent_offset=1)  # Φ^{K−1} instead of Φ^{K−2}
    assert exponent_k["integration by parts"] != 0 and not S.holds(exponent_k)
    coefficient_k = S.derivative_formula(coefficient=S.K)
    assert coefficient_k["integration by parts"] != 0 and not S.holds(coefficient_k)
    # A coefficient that can vanish (K − 2 at K = 2) leaves positivity undecided.
    assert S.derivative_formula(coefficient=S.K - 2)["positive integrand"] is not sp.true


def test_uniform_affine_map() -> None:
    assert_proved(S.uniform_affine_map())
    assert not S.holds(S.uniform_affine_map(claim=lambda a, k: (k * a - 1) / k))


def test_kernel_composition() -> None:
    assert_proved(S.kernel_composition())
    wrong = S.kernel_composition(conditional=lambda later, earlier: later - earlier)
    assert wrong["scalar"] != 0 and not S.holds(wrong)


def test_reverse_posterior() -> None:
    assert_proved(S.reverse_posterior())
    wrong = S.reverse_posterior(unmask_probability=lambda a_s, a_t: (a_s - a_t) / a_s)
    assert wrong["unmask probability"] != 0 and wrong["sums to one"] == 0


def test_elbo_weight_limit() -> None:
    result = S.elbo_weight_limit()
    assert_proved(result)
    assert {"generic alpha", "log-linear", "cosine"} <= set(result)
    assert not S.holds(S.elbo_weight_limit(weight=lambda a, da: -da / a))


def test_threshold_cdf() -> None:
    assert_proved(S.threshold_cdf())
    wrong = S.threshold_cdf(exponent_offset=0)  # exponent K instead of K − 1
    assert wrong["K=2 conditional CDF"] != 0 and wrong["K=3 conditional CDF"] != 0


def test_probability_integral_transform() -> None:
    assert_proved(S.probability_integral_transform())
    assert not S.holds(S.probability_integral_transform(transform=lambda f: f**2))


def test_run_all_records_every_statement_quickly() -> None:
    start = time.perf_counter()
    results = S.run_all()
    elapsed = time.perf_counter() - start
    assert [r.name for r in results] == list(S.PROOFS)
    assert all(isinstance(r.passed, bool) and r.passed for r in results), [r for r in results if not r.passed]
    assert all(r.statement and r.detail for r in results)
    assert elapsed < 60.0
