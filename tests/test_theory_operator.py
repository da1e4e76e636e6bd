"""Tests of the masked duality operator α_K(ν) (theory/operator.py).

Accuracy is checked against a 30-digit mpmath reference (`_mpmath_reference`: its own
integrands and tanh–sinh quadrature split at the peak), both through the cached per-K
tables (many points of one K in a call) and through the per-point quadrature path.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from theory import (
    log_masked_alpha,
    masked_alpha,
    masked_alpha_deriv,
    nu_from_masked_alpha,
    uniform_alpha,
)
from theory import operator as op

VOCAB_SIZES = (2, 3, 10, 1000, 50258, 10**7)
# Four ν per K over [−30, 40], shifted per K so that the grid covers ~24 distinct values,
# plus the corners and the region where 1 − Φ^{K−1} bends sharply for large K.
BASE_NUS = (-30.0, -6.3, 1.7, 13.0)
REL_TOL = 1e-10
DERIV_REL_TOL = 1e-8
TINY = 1e-300


def reference_points() -> list[tuple[float, int]]:
    points = []
    for i, k in enumerate(VOCAB_SIZES):
        for j, nu in enumerate(BASE_NUS):
            shift = 0.83 * ((i + j) % 6) if j > 0 else 0.0
            points.append((nu + shift, k))
    points += [(40.0, 10**7), (40.0, 3), (2.2, 10**7), (5.7, 10**7), (4.4, 50258)]
    return points


@pytest.fixture(scope="module")
def references() -> dict[tuple[float, int], dict[str, mpmath.mpf]]:
    """For each point: the smaller of α, 1 − α by mpmath (the other one is 1 − it), and α'."""
    out = {}
    with mpmath.workdps(30):
        for nu, k in reference_points():
            small_is_alpha = masked_alpha(nu, k) <= 0.5
            small = op._mpmath_reference(nu, k, "alpha" if small_is_alpha else "complement")
            out[(nu, k)] = {
                "alpha": small if small_is_alpha else 1 - small,
                "complement": 1 - small if small_is_alpha else small,
                "deriv": op._mpmath_reference(nu, k, "deriv"),
            }
    return out


def relative_error(value: float, exact: mpmath.mpf) -> float:
    with mpmath.workdps(30):
        return float(abs(mpmath.mpf(value) / exact - 1))


def check_against_reference(values: dict[str, np.ndarray], points, references) -> None:
    checked = {"alpha": 0, "complement": 0, "deriv": 0}
    for name in checked:
        assert len(values[name]) == len(points)
        for value, point in zip(values[name], points):
            exact = references[point][name]
            if exact < TINY:
                continue
            err = relative_error(float(value), exact)
            tol = DERIV_REL_TOL if name == "deriv" else REL_TOL
            assert err <= tol, f"{name} at nu={point[0]}, K={point[1]}: relative error {err:.3g}"
            checked[name] += 1
    # Not vacuous: most reference points lie above TINY, for every function.
    assert min(checked.values()) >= len(points) // 2, checked


def test_reference_grid_per_point(references):
    """The per-point quadrature path (used for K values seen with few points) at every reference point."""
    points = reference_points()
    values = {
        "alpha": [op._direct_log(np.array([nu]), np.array([k - 1.0]), op._ALPHA)[0] for nu, k in points],
        "complement": [op._direct_log(np.array([nu]), np.array([k - 1.0]), op._COMPLEMENT)[0] for nu, k in points],
        "deriv": [op._direct_log(np.array([nu]), np.array([k - 1.0]), op._DERIV)[0] for nu, k in points],
    }
    check_against_reference({name: np.exp(v) for name, v in values.items()}, points, references)


def test_reference_grid_public_and_tables(references):
    """Public functions on arrays large enough that the per-K tables are built and used."""
    points = reference_points()
    filler = np.linspace(-30.0, 40.0, 400)
    values: dict[str, list[float]] = {"alpha": [], "complement": [], "deriv": []}
    for nu, k in points:
        nus = np.append(filler, nu)
        values["alpha"].append(masked_alpha(nus, k)[-1])
        values["complement"].append(masked_alpha(nus, k, complement=True)[-1])
        values["deriv"].append(masked_alpha_deriv(nus, k)[-1])
    for k in VOCAB_SIZES[1:]:
        assert float(k) in op._tables
    check_against_reference({name: np.array(v) for name, v in values.items()}, points, references)


def test_log_masked_alpha_matches_reference_in_deep_tails(references):
    """The log-space function keeps accuracy where α and 1 − α are as small as 1e-300."""
    for (nu, k), ref in references.items():
        for complement in (False, True):
            exact = ref["complement" if complement else "alpha"]
            if exact < TINY:
                continue
            with mpmath.workdps(30):
                exact_log = float(mpmath.log(exact))
            got = log_masked_alpha(nu, k, complement=complement)
            # An absolute error ε in the log is a relative error ≈ ε in the value.
            assert abs(got - exact_log) <= REL_TOL


@pytest.mark.parametrize("k", [3, 4, 10, 1000, 50258, 10**7])
def test_table_is_continuous_just_below_its_split(k):
    """The table holds log α left of an integer split and log(1 − α) right of it.  ν a few ulps
    below the split used to be looked up in the right-hand panel yet read as log α: α_3(−1e-60)
    came out 2/3 instead of 1/3 (found by hypothesis in test_derivative_matches_finite_difference)."""
    op.masked_alpha(np.linspace(-5.0, 10.0, 600), k)  # build the table
    split = op._tables[float(k)].split
    below = [split]
    for _ in range(40):
        below.append(np.nextafter(below[-1], -np.inf))
    below = np.array(below + ([-1e-300, -1e-60] if split == 0 else []))
    for complement in (False, True):
        values = masked_alpha(below, k, complement=complement)
        np.testing.assert_allclose(values, values[0], rtol=1e-12)  # α' ≤ 1 and the points are 1e-14 apart
    np.testing.assert_allclose(nu_from_masked_alpha(masked_alpha(below, k), k), below, atol=1e-11)


def test_table_and_quadrature_paths_agree():
    k = 777
    nus = np.linspace(-33.0, 45.0, 2001)
    tabled = log_masked_alpha(nus, k)
    assert float(k) in op._tables
    direct = op._direct_log(nus, np.full_like(nus, k - 1.0), op._ALPHA)
    keep = direct > -700
    assert np.max(np.abs(tabled[keep] - direct[keep])) < 1e-11
    tabled_d = np.log(masked_alpha_deriv(nus, k))
    direct_d = op._direct_log(nus, np.full_like(nus, k - 1.0), op._DERIV)
    keep = direct_d > -700
    assert np.max(np.abs(tabled_d[keep] - direct_d[keep])) < 1e-11


# --- exact values -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 7, 1000, 50258, 10**7])
def test_exact_values(k):
    assert masked_alpha(0.0, k) == 1.0 / k
    assert masked_alpha(0.0, k, complement=True) == 1.0 - 1.0 / k
    assert masked_alpha(-math.inf, k) == 0.0 and masked_alpha(math.inf, k) == 1.0
    assert masked_alpha(-math.inf, k, complement=True) == 1.0
    assert masked_alpha(math.inf, k, complement=True) == 0.0
    assert masked_alpha_deriv(-math.inf, k) == 0.0 and masked_alpha_deriv(math.inf, k) == 0.0
    assert uniform_alpha(0.0, k) == 0.0
    assert uniform_alpha(math.inf, k) == 1.0 and uniform_alpha(-math.inf, k) == -1.0 / (k - 1)
    assert nu_from_masked_alpha(0.0, k) == -math.inf and nu_from_masked_alpha(1.0, k) == math.inf
    assert nu_from_masked_alpha(1.0 / k, k) == 0.0
    assert nu_from_masked_alpha(1.0 - 1.0 / k, k, complement=True) == 0.0
    assert nu_from_masked_alpha(0.0, k, complement=True) == math.inf
    assert nu_from_masked_alpha(1.0, k, complement=True) == -math.inf


def test_binary_vocabulary_closed_form():
    nus = np.linspace(-40.0, 40.0, 161)
    # exp(log Φ) of values down to 1e-175: the log carries ~|log Φ|·2e-16 absolute error.
    np.testing.assert_allclose(masked_alpha(nus, 2), ndtr(nus / math.sqrt(2)), rtol=1e-12, atol=0)
    np.testing.assert_allclose(masked_alpha(nus, 2, complement=True), ndtr(-nus / math.sqrt(2)), rtol=1e-12, atol=0)
    density = np.exp(-(nus**2) / 4) / (2 * math.sqrt(math.pi))
    np.testing.assert_allclose(masked_alpha_deriv(nus, 2), density, rtol=1e-12, atol=0)


# --- properties ------------------------------------------------------------------------------

nus_st = st.floats(min_value=-60.0, max_value=60.0, allow_nan=False)
vocab_st = st.one_of(st.integers(2, 20), st.integers(2, 10**7), st.sampled_from([50258, 10**7]))


@settings(max_examples=60)
@given(a=nus_st, b=nus_st, k=vocab_st)
def test_monotone_and_bounded(a, b, k):
    lo, hi = min(a, b), max(a, b)
    alpha = masked_alpha(np.array([lo, hi]), k)
    comp = masked_alpha(np.array([lo, hi]), k, complement=True)
    assert np.all((alpha >= 0) & (alpha <= 1) & (comp >= 0) & (comp <= 1))
    assert alpha[0] <= alpha[1] * (1 + 1e-12)
    assert comp[1] <= comp[0] * (1 + 1e-12)
    assert np.all(masked_alpha_deriv(np.array([lo, hi]), k) >= 0)
    assert np.all(log_masked_alpha(np.array([lo, hi]), k) <= 0)


@settings(max_examples=60)
@given(nu=nus_st, k=vocab_st)
def test_complement_consistency(nu, k):
    alpha = masked_alpha(nu, k)
    comp = masked_alpha(nu, k, complement=True)
    assert abs(alpha + comp - 1.0) <= 5e-16
    # The log of the smaller of the two is the accurate one; the other follows.
    if 1e-300 < alpha <= 0.5:
        assert math.isclose(log_masked_alpha(nu, k), math.log(alpha), rel_tol=1e-13)
        assert math.isclose(log_masked_alpha(nu, k, complement=True), math.log1p(-alpha), rel_tol=1e-13)
    elif alpha > 0.5 and comp > 1e-300:
        assert math.isclose(log_masked_alpha(nu, k, complement=True), math.log(comp), rel_tol=1e-13)
        assert math.isclose(log_masked_alpha(nu, k), math.log1p(-comp), rel_tol=1e-13)
    u = uniform_alpha(nu, k)
    assert math.isclose(u, (k * alpha - 1) / (k - 1), rel_tol=1e-9, abs_tol=1e-15 * k / (k - 1))


@settings(max_examples=40)
@given(nu=st.floats(-25.0, 35.0), k=vocab_st)
def test_derivative_matches_finite_difference(nu, k):
    h = 1e-4
    log_plus, log_minus = log_masked_alpha(np.array([nu + h, nu - h]), k)
    deriv = masked_alpha_deriv(nu, k)
    assert deriv > 1e-280  # this ν range keeps α' far from underflow (smallest ≈ 1e-196, at ν = −25, K = 10^7)
    # Central difference of log α: (log α)' = α'/α, truncation O(h²) ≈ 1e-8 relative.
    alpha = masked_alpha(nu, k)
    if alpha > 0.5:  # use log(1 − α) where it carries the information
        log_plus, log_minus = log_masked_alpha(np.array([nu + h, nu - h]), k, complement=True)
        fd = -(log_plus - log_minus) / (2 * h) * masked_alpha(nu, k, complement=True)
    else:
        fd = (log_plus - log_minus) / (2 * h) * alpha
    assert math.isclose(fd, deriv, rel_tol=1e-6)


@settings(max_examples=60)
@given(log_a=st.floats(math.log(1e-300), math.log(0.5)), upper=st.booleans(), k=vocab_st)
def test_inverse_round_trip(log_a, upper, k):
    small = math.exp(log_a)
    if upper:
        small = max(small, 1e-15)
        a = 1.0 - small
        nu = nu_from_masked_alpha(a, k)
        back = masked_alpha(nu, k, complement=True)
        assert abs(back / (1.0 - a) - 1) <= REL_TOL
    else:
        nu = nu_from_masked_alpha(small, k)
        assert abs(masked_alpha(nu, k) / small - 1) <= REL_TOL


@settings(max_examples=40)
@given(log_c=st.floats(math.log(1e-300), math.log(1 - 1e-15)), k=vocab_st)
def test_inverse_from_complement_round_trip(log_c, k):
    """complement=True takes 1 − α, so α within 1e-300 of 1 is still invertible."""
    one_minus = math.exp(log_c)
    nu = nu_from_masked_alpha(one_minus, k, complement=True)
    assert abs(masked_alpha(nu, k, complement=True) / one_minus - 1) <= REL_TOL
    if one_minus >= 0.5:
        assert nu == pytest.approx(nu_from_masked_alpha(1 - one_minus, k), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("k", [3, 5, 50])
def test_inverse_between_one_over_k_and_one_over_k_minus_one(monkeypatch, k):
    """α ∈ (1/K, 1/(K − 1)]: ν > 0 and α_K(ν) = α, on the per-point Newton path (the per-K tables
    emptied, so none is used).  α_K(0) = 1/K is where the inverse switches from Newton in log α to
    Newton in log(1 − α); a switch at 1/(K − 1) sends these α to the wrong side of 0."""
    monkeypatch.setattr(op, "_tables", OrderedDict())
    monkeypatch.setattr(op, "_points_seen", {})
    a = np.append(np.linspace(1.0 / k, 1.0 / (k - 1), 9)[1:], 1.0 / k * (1 + 1e-9))
    nu = nu_from_masked_alpha(a, k)
    assert not op._tables  # the direct path was taken
    assert np.all(nu > 0)
    np.testing.assert_allclose(masked_alpha(nu, k), a, rtol=REL_TOL, atol=0)
    below = nu_from_masked_alpha(1.0 / k * (1 - 1e-9), k)
    assert below < 0 and masked_alpha(below, k) == pytest.approx(1.0 / k * (1 - 1e-9), rel=REL_TOL)


def test_inverse_round_trip_tables():
    rng = np.random.default_rng(0)
    a = np.concatenate([np.exp(rng.uniform(math.log(1e-300), math.log(0.5), 5000)),
                        1 - np.exp(rng.uniform(math.log(1e-15), math.log(0.5), 5000))])
    for k in (3, 50258, 10**7):
        nu = nu_from_masked_alpha(a, k)
        assert float(k) in op._tables
        lower = a <= 0.5
        assert np.max(np.abs(masked_alpha(nu[lower], k) / a[lower] - 1)) <= REL_TOL
        back = masked_alpha(nu[~lower], k, complement=True)
        assert np.max(np.abs(back / (1 - a[~lower]) - 1)) <= REL_TOL
        assert np.all(np.diff(nu[np.argsort(a)]) >= 0)


@settings(max_examples=30)
@given(nu=st.floats(allow_nan=False, allow_infinity=True), k=vocab_st)
def test_never_nan_and_in_range_for_any_nu(nu, k):
    for value in (masked_alpha(nu, k), masked_alpha(nu, k, complement=True), uniform_alpha(nu, k)):
        assert not math.isnan(value)
    deriv = masked_alpha_deriv(nu, k)
    assert 0.0 <= deriv < 1.0
    assert log_masked_alpha(nu, k) <= 0.0 and log_masked_alpha(nu, k, complement=True) <= 0.0


# --- array kinds and broadcasting ---------------------------------------------------------


@pytest.mark.parametrize("func", [masked_alpha, masked_alpha_deriv, log_masked_alpha, uniform_alpha])
def test_numpy_torch_float_agree(func):
    nus = np.array([-5.0, -0.5, 0.0, 1.5, 7.0])
    by_numpy = func(nus, 100)
    for dtype in (torch.float32, torch.float64):
        tensor = torch.tensor(nus, dtype=dtype)
        by_torch = func(tensor, 100)
        assert isinstance(by_torch, torch.Tensor)
        assert by_torch.dtype == torch.float64 and by_torch.device == tensor.device
        expected = func(tensor.double().numpy(), 100)
        np.testing.assert_array_equal(by_torch.numpy(), expected)
    np.testing.assert_array_equal(func(torch.tensor(nus), torch.tensor(100)).numpy(), by_numpy)
    scalar = func(1.5, 100)
    assert isinstance(scalar, float) and scalar == by_numpy[3]
    assert isinstance(func(np.float64(1.5), np.int64(100)), float)


def test_inverse_kinds():
    a = torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0])
    nu = nu_from_masked_alpha(a, 50)
    assert isinstance(nu, torch.Tensor) and nu.dtype == torch.float64
    np.testing.assert_array_equal(nu.numpy(), nu_from_masked_alpha(a.double().numpy(), 50))
    assert isinstance(nu_from_masked_alpha(0.3, 50), float)


def test_broadcasting():
    nus = np.array([[-3.0], [0.5], [4.0]])
    ks = np.array([2, 10, 50258, 10**7])
    grid = masked_alpha(nus, ks)
    assert grid.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert grid[i, j] == pytest.approx(masked_alpha(float(nus[i, 0]), int(ks[j])), rel=1e-13)
    inv = nu_from_masked_alpha(np.array([[0.1], [0.9]]), ks)
    assert inv.shape == (2, 4)
    np.testing.assert_allclose(masked_alpha(inv, ks), np.broadcast_to([[0.1], [0.9]], (2, 4)), rtol=1e-12)
    assert masked_alpha(np.zeros((0,)), 5).shape == (0,)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, math.nan, math.inf, True, np.array([3, 1])])
def test_bad_vocab_size(k):
    for func in (masked_alpha, masked_alpha_deriv, log_masked_alpha, uniform_alpha, nu_from_masked_alpha):
        with pytest.raises(ValueError, match="vocab_size"):
            func(0.3, k)


def test_nan_nu_and_bad_alpha():
    for func in (masked_alpha, masked_alpha_deriv, log_masked_alpha, uniform_alpha):
        with pytest.raises(ValueError, match="nu"):
            func(np.array([0.0, math.nan]), 10)
        with pytest.raises(ValueError, match="nu"):
            func(torch.tensor([math.nan]), 10)
    for bad in (-0.1, 1.0000001, math.nan, math.inf):
        with pytest.raises(ValueError, match="alpha"):
            nu_from_masked_alpha(bad, 10)
    with pytest.raises(ValueError, match="nu"):
        masked_alpha("not a number", 10)


# --- one input rule for every public operator function -----------------------------------

# (function, name of its first argument); complement variants are separate entries.
PUBLIC = [
    (masked_alpha, "nu"),
    (lambda x, k: masked_alpha(x, k, complement=True), "nu"),
    (masked_alpha_deriv, "nu"),
    (log_masked_alpha, "nu"),
    (lambda x, k: log_masked_alpha(x, k, complement=True), "nu"),
    (uniform_alpha, "nu"),
    (nu_from_masked_alpha, "alpha"),
    (lambda x, k: nu_from_masked_alpha(x, k, complement=True), "alpha"),
]
PUBLIC_IDS = ["alpha", "complement", "deriv", "log", "log_complement", "uniform", "inverse", "inverse_complement"]


@pytest.mark.parametrize(("func", "name"), PUBLIC, ids=PUBLIC_IDS)
@pytest.mark.parametrize(
    "bad",
    ["1", b"1", 0.5 + 0j, np.array([0.5 + 1j]), torch.tensor([0.5 + 1j]), True, np.array([True]),
     torch.tensor([True]), ["0.5"], [[0.1, 0.2], [0.3]], np.array([0.5], dtype=object), None],
    ids=["str", "bytes", "complex", "complex-array", "complex-tensor", "bool", "bool-array", "bool-tensor",
         "list-of-str", "ragged-list", "object-array", "None"],
)
def test_non_real_input_is_refused_by_name(func, name, bad):
    """Strings, complex (formerly a warning and a dropped imaginary part), bools, ragged lists: a
    ValueError naming the argument, and no warning on the way."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"^{name} "):
            func(bad, 10)
        with pytest.raises(ValueError, match="^vocab_size "):
            func(0.5, bad if not isinstance(bad, list) else ["10"])


@pytest.mark.parametrize(("func", "name"), PUBLIC, ids=PUBLIC_IDS)
def test_lists_and_tuples_are_accepted_and_give_numpy(func, name):
    values = [[0.05, 0.5], [0.7, 0.95]]
    expected = func(np.array(values), 10)
    for as_given, want in ((values, expected), (tuple(map(tuple, values)), expected), ([np.float64(0.05), 0.5], expected[0])):
        got = func(as_given, 10)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    by_list_k = func(0.5, [2, 10, 50258])
    assert isinstance(by_list_k, np.ndarray)
    np.testing.assert_array_equal(by_list_k, func(0.5, np.array([2, 10, 50258])))


def test_masked_alpha_of_a_list_is_the_issue_example():
    """theory.masked_alpha([0., 1., 2.], 10) used to fail with a reshape error after computing."""
    got = masked_alpha([0.0, 1.0, 2.0], 10)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    assert got[0] == 0.1  # α_K(0) = 1/K exactly
    np.testing.assert_array_equal(got[1:], [masked_alpha(1.0, 10), masked_alpha(2.0, 10)])
