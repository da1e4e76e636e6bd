"""Masked schedules and their Gaussian calibration (theory.schedules).

Deterministic and property-based (hypothesis) checks; no Monte Carlo, so no false-fail rate.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import (
    CalibratedSchedule,
    CosineSchedule,
    LogLinearSchedule,
    MaskSchedule,
    PolynomialSchedule,
    calibrate,
    masked_alpha,
)

DEFAULT_SCHEDULES = [LogLinearSchedule(), CosineSchedule(), PolynomialSchedule()]
SCHEDULE_IDS = ["loglinear", "cosine", "polynomial"]

unit_times = st.floats(0.0, 1.0, allow_nan=False)
epsilons = st.floats(0.0, 0.5, allow_nan=False)
powers = st.floats(0.25, 6.0, allow_nan=False)


@st.composite
def schedules(draw: st.DrawFn) -> MaskSchedule:
    kind = draw(st.sampled_from(["loglinear", "cosine", "polynomial"]))
    eps = draw(epsilons)
    if kind == "loglinear":
        return LogLinearSchedule(eps=eps)
    if kind == "cosine":
        return CosineSchedule(eps=eps)
    return PolynomialSchedule(power=draw(powers), eps=eps)


# --------------------------------------------------------------------------------------
# masked schedules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
def test_default_schedules_start_clean_and_end_at_eps(schedule: MaskSchedule) -> None:
    assert schedule.alpha(0.0) == 1.0
    assert schedule.alpha(1.0) == pytest.approx(1e-3, rel=1e-12)
    assert schedule.one_minus_alpha(0.0) == 0.0


def test_log_linear_formula() -> None:
    schedule = LogLinearSchedule()
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(schedule.alpha(t), 1 - (1 - 1e-3) * t, rtol=0, atol=1e-15)
    np.testing.assert_allclose(schedule.alpha_deriv(t), np.full(11, -(1 - 1e-3)), rtol=1e-15)


@given(schedule=schedules(), t1=unit_times, t2=unit_times)
def test_alpha_is_non_increasing_and_within_bounds(schedule: MaskSchedule, t1: float, t2: float) -> None:
    early, late = min(t1, t2), max(t1, t2)
    a_early, a_late = schedule.alpha(early), schedule.alpha(late)
    assert a_early >= a_late
    assert 0.0 <= schedule.alpha(1.0) <= a_late <= a_early <= schedule.alpha(0.0) <= 1.0
    assert schedule.alpha_deriv(early) <= 0.0


@given(schedule=schedules(), t=st.floats(0.01, 0.99))
def test_alpha_deriv_matches_finite_difference(schedule: MaskSchedule, t: float) -> None:
    h = 1e-6
    finite_difference = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    assert schedule.alpha_deriv(t) == pytest.approx(finite_difference, rel=1e-5, abs=1e-8)


@given(schedule=schedules(), t=st.floats(0.0, 1.0))
def test_one_minus_alpha_is_the_complement(schedule: MaskSchedule, t: float) -> None:
    assert schedule.one_minus_alpha(t) == pytest.approx(1.0 - schedule.alpha(t), abs=1e-15)


@given(schedule=schedules(), t=unit_times)
def test_t_from_alpha_round_trip(schedule: MaskSchedule, t: float) -> None:
    back = schedule.t_from_alpha(schedule.alpha(t))
    # Exact in α; in t to the precision the slope allows (α′ → 0 at t = 0 for the cosine).
    assert schedule.alpha(back) == pytest.approx(schedule.alpha(t), abs=4e-16)
    slope = abs(schedule.alpha_deriv(t)) if t > 0 else 0.0
    if slope > 1e-3:
        assert back == pytest.approx(t, abs=1e-12 / slope)


@given(schedule=schedules(), log10_t=st.floats(-14.0, 0.0))
def test_t_from_alpha_complement_keeps_small_times(schedule: MaskSchedule, log10_t: float) -> None:
    t = 10.0**log10_t
    one_minus = schedule.one_minus_alpha(t)
    if one_minus > 1e-300:
        assert schedule.t_from_alpha(one_minus, complement=True) == pytest.approx(t, rel=1e-10)


def test_elbo_weight_closed_forms_and_t_zero() -> None:
    t = np.array([1e-9, 1e-3, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(LogLinearSchedule().elbo_weight(t), 1 / t, rtol=1e-13)
    np.testing.assert_allclose(PolynomialSchedule(power=3.0).elbo_weight(t), 3 / t, rtol=1e-13)
    cosine = CosineSchedule()
    np.testing.assert_allclose(
        cosine.elbo_weight(t), -cosine.alpha_deriv(t) / cosine.one_minus_alpha(t), rtol=1e-13
    )
    assert cosine.elbo_weight(1e-8) == pytest.approx(2e8, rel=1e-6)
    for schedule in DEFAULT_SCHEDULES:
        assert schedule.elbo_weight(0.0) == math.inf
        assert np.isfinite(schedule.elbo_weight(np.linspace(1e-6, 1, 50))).all()
        assert schedule.elbo_weight(torch.tensor([0.0, 0.5]))[0].item() == math.inf


@given(schedule=schedules(), t=st.floats(1e-6, 1.0))
def test_elbo_weight_is_positive_and_matches_definition(schedule: MaskSchedule, t: float) -> None:
    weight = schedule.elbo_weight(t)
    assert weight > 0
    assert weight == pytest.approx(-schedule.alpha_deriv(t) / schedule.one_minus_alpha(t), rel=1e-13)
    if schedule.one_minus_alpha(t) > 1e-4:  # there the naive 1 − α has lost at most ~1e-12
        assert weight == pytest.approx(-schedule.alpha_deriv(t) / (1 - schedule.alpha(t)), rel=1e-9)


# ---- array kinds ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
def test_float_numpy_torch_kinds(schedule: MaskSchedule) -> None:
    assert type(schedule.alpha(0.5)) is float
    assert type(schedule.alpha(1)) is float
    out = schedule.alpha(np.array([0.1, 0.5]))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    for dtype in (torch.float32, torch.float64):
        tt = torch.tensor([0.1, 0.5], dtype=dtype)
        for method in (schedule.alpha, schedule.alpha_deriv, schedule.elbo_weight, schedule.one_minus_alpha):
            result = method(tt)
            assert isinstance(result, torch.Tensor) and result.dtype == dtype and result.device == tt.device
    assert schedule.t_from_alpha(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_is_preserved(device: str) -> None:
    t = torch.tensor([0.0, 0.3, 1.0], device=device)
    for schedule in DEFAULT_SCHEDULES:
        for result in (schedule.alpha(t), schedule.alpha_deriv(t), schedule.elbo_weight(t), schedule.t_from_alpha(t[1:])):
            assert result.device == t.device
    calibrated = calibrate(LogLinearSchedule(), 1000)
    for result in (calibrated.nu(t), calibrated.alpha_tilde(t), calibrated.sigma_tilde(t)):
        assert result.device == t.device and result.dtype == torch.float64
    np.testing.assert_allclose(calibrated.nu(t).cpu().numpy(), calibrated.nu(t.cpu().double().numpy()))


@given(schedule=schedules(), t=st.lists(unit_times, min_size=1, max_size=8))
def test_numpy_and_torch_agree(schedule: MaskSchedule, t: list[float]) -> None:
    arr = np.array(t)
    tensor = torch.tensor(t, dtype=torch.float64)
    for name in ("alpha", "alpha_deriv", "one_minus_alpha"):
        np.testing.assert_allclose(
            getattr(schedule, name)(tensor).numpy(), getattr(schedule, name)(arr), rtol=1e-13, atol=1e-15
        )
    a = schedule.alpha(arr)
    np.testing.assert_allclose(schedule.t_from_alpha(torch.tensor(a)).numpy(), schedule.t_from_alpha(a), atol=1e-12)


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
def test_shapes_are_preserved(schedule: MaskSchedule) -> None:
    for shape in [(), (3,), (2, 3), (2, 1, 4), (0,)]:
        t = np.full(shape, 0.3)
        assert np.shape(schedule.alpha(t)) == shape
        assert tuple(schedule.elbo_weight(torch.full(shape, 0.3)).shape) == shape


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
def test_torch_gradients(schedule: MaskSchedule) -> None:
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64, requires_grad=True)
    schedule.alpha(t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), schedule.alpha_deriv(t.detach().numpy()), rtol=1e-12)
    a = torch.tensor(schedule.alpha(np.array([0.2, 0.6])), requires_grad=True)
    schedule.t_from_alpha(a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), 1 / schedule.alpha_deriv(np.array([0.2, 0.6])), rtol=1e-9)


# ---- description ----------------------------------------------------------------------


@given(schedule=schedules())
def test_describe_round_trips_through_json(schedule: MaskSchedule) -> None:
    description = json.loads(json.dumps(schedule.describe()))
    rebuilt = MaskSchedule.from_description(description)
    assert rebuilt == schedule and type(rebuilt) is type(schedule)
    assert rebuilt.alpha(0.37) == schedule.alpha(0.37)


def test_from_description_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="name"):
        MaskSchedule.from_description({"name": "no-such-schedule", "params": {}})
    with pytest.raises(ValueError, match="params"):
        MaskSchedule.from_description({"name": "loglinear", "params": {"bogus": 1}})
    with pytest.raises(ValueError, match="description"):
        MaskSchedule.from_description({"params": {}})


# ---- user-supplied schedules and validation -------------------------------------------


def test_user_schedule_from_callables() -> None:
    schedule = MaskSchedule(alpha=lambda t: 1 - t**2, alpha_deriv=lambda t: -2 * t)
    assert schedule.alpha(0.5) == 0.75
    assert schedule.t_from_alpha(0.75) == pytest.approx(0.5, abs=1e-15)
    assert schedule.elbo_weight(0.5) == pytest.approx(1.0 / 0.25)
    t = torch.tensor([0.5], requires_grad=True)
    schedule.alpha(t).sum().backward()
    assert t.grad.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="no registered name"):
        schedule.describe()


def test_user_schedule_subclass() -> None:
    class Quadratic(MaskSchedule):
        def _alpha(self, t, xp):
            return 1 - t**2

        def _alpha_deriv(self, t, xp):
            return -2 * t

    assert Quadratic().alpha(np.array([0.5])).tolist() == [0.75]


@pytest.mark.parametrize(
    ("alpha", "alpha_deriv", "message"),
    [
        (lambda t: t * 0.5, lambda t: 0.5 + 0 * t, "non-increasing"),
        (lambda t: 1.5 - t, lambda t: -1 + 0 * t, r"alpha\(0\) must be <= 1, got 1.5"),
        (lambda t: 0.5 - t, lambda t: -1 + 0 * t, r"alpha\(1\) must be >= 0, got -0.5"),
        (lambda t: 0.5 + 0 * t, lambda t: 0 * t, "must decrease"),
        (lambda t: 1 - t**2, lambda t: -t, "alpha_deriv does not match"),
        (lambda t: 1 - t + np.nan * (t > 0.5), lambda t: -1 + 0 * t, "finite"),
    ],
)
def test_invalid_user_schedules_are_rejected(alpha, alpha_deriv, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskSchedule(alpha=alpha, alpha_deriv=alpha_deriv)


def test_invalid_parameters() -> None:
    for bad in (-0.1, 1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="eps"):
            LogLinearSchedule(eps=bad)
        with pytest.raises(ValueError, match="eps"):
            CosineSchedule(eps=bad)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="power"):
            PolynomialSchedule(power=bad)
    with pytest.raises(ValueError, match="alpha_deriv"):
        MaskSchedule(alpha=lambda t: 1 - t)
    with pytest.raises(ValueError, match="alpha"):
        MaskSchedule()


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
@pytest.mark.parametrize(
    "bad_t", [-0.1, 1.5, math.nan, math.inf, np.array([0.2, 1.1]), np.array([0.5, np.nan]), torch.tensor([0.2, -0.1])]
)
def test_bad_times_raise(schedule: MaskSchedule, bad_t) -> None:
    for method in (schedule.alpha, schedule.alpha_deriv, schedule.elbo_weight, schedule.one_minus_alpha):
        with pytest.raises(ValueError, match=r"^t "):
            method(bad_t)


def test_bad_alpha_for_inverse_raises() -> None:
    schedule = LogLinearSchedule()
    for bad in (1.2, 0.0, -0.5, math.nan, np.array([0.5, 2.0])):
        with pytest.raises(ValueError, match="alpha"):
            schedule.t_from_alpha(bad)


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------

VOCAB_SIZES = [2, 10, 1000, 50258]
CALIBRATION_TIMES = np.concatenate([[0.0, 1e-12, 1e-8, 1e-5, 1e-3], np.linspace(0.01, 1.0, 100)])


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=SCHEDULE_IDS)
def test_calibration_reproduces_alpha(schedule: MaskSchedule, vocab_size: int) -> None:
    calibrated = calibrate(schedule, vocab_size)
    nu = calibrated.nu(CALIBRATION_TIMES)
    alpha = schedule.alpha(CALIBRATION_TIMES)
    one_minus = schedule.one_minus_alpha(CALIBRATION_TIMES)
    assert nu[0] == math.inf
    np.testing.assert_allclose(masked_alpha(nu, vocab_size), alpha, rtol=1e-10, atol=0)
    # The complement too, where the masking rate is small (t near 0): tiny rates keep their digits.
    upper = alpha > 0.5
    np.testing.assert_allclose(
        masked_alpha(nu[upper], vocab_size, complement=True), one_minus[upper], rtol=1e-10, atol=0
    )
    assert (np.diff(nu) < 0).all(), "nu must decrease strictly with t"


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
def test_negative_nu_exactly_where_alpha_below_chance(vocab_size: int) -> None:
    schedule = LogLinearSchedule(eps=0.0)
    t = np.linspace(0.0, 1.0, 201)
    alpha = schedule.alpha(t)
    calibrated = calibrate(schedule, vocab_size)
    nu = calibrated.nu(t)
    chance = 1.0 / vocab_size
    np.testing.assert_array_equal(nu < 0, alpha < chance)
    np.testing.assert_array_equal(nu > 0, alpha > chance)
    alpha_tilde = calibrated.alpha_tilde(t)
    np.testing.assert_array_equal(np.sign(alpha_tilde), np.sign(nu))
    assert nu[-1] == -math.inf and alpha_tilde[-1] == -1.0 and calibrated.sigma_tilde(1.0) == 0.0
    at_chance = schedule.t_from_alpha(chance)
    assert calibrated.nu(at_chance) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("vocab_size", [2, 1000])
def test_coefficients_are_variance_preserving(vocab_size: int) -> None:
    calibrated = calibrate(CosineSchedule(), vocab_size)
    t = np.linspace(0.0, 1.0, 41)
    nu = calibrated.nu(t)
    alpha_tilde, sigma_tilde = calibrated.alpha_tilde(t), calibrated.sigma_tilde(t)
    np.testing.assert_allclose(alpha_tilde**2 + sigma_tilde**2, 1.0, rtol=1e-14)
    assert (sigma_tilde >= 0).all()
    finite = np.isfinite(nu)
    np.testing.assert_allclose(alpha_tilde[finite] / sigma_tilde[finite], nu[finite], rtol=1e-13)
    np.testing.assert_allclose(alpha_tilde[finite], nu[finite] / np.sqrt(1 + nu[finite] ** 2), rtol=1e-14)
    assert (alpha_tilde[0], sigma_tilde[0]) == (1.0, 0.0)


@pytest.mark.parametrize("vocab_size", [2, 10, 50258])
def test_t_from_nu_round_trip(vocab_size: int) -> None:
    calibrated = calibrate(PolynomialSchedule(), vocab_size)
    t = np.array([0.0, 1e-6, 0.05, 0.3, 0.7, 1.0])
    np.testing.assert_allclose(calibrated.t_from_nu(calibrated.nu(t)), t, rtol=1e-9, atol=1e-12)
    nu_min, nu_max = calibrated.nu_range()
    with pytest.raises(ValueError, match="nu"):
        calibrated.t_from_nu(nu_min - 1.0)
    with pytest.raises(ValueError, match="nu"):
        calibrated.t_from_nu(math.nan)


@given(t=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
@settings(max_examples=20)
def test_calibrated_kinds_agree(t: list[float]) -> None:
    calibrated = calibrate(LogLinearSchedule(), 10)
    arr = np.array(t)
    for name in ("nu", "alpha_tilde", "sigma_tilde"):
        method = getattr(calibrated, name)
        from_numpy = method(arr)
        from_torch = method(torch.tensor(t, dtype=torch.float32))
        assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
        np.testing.assert_allclose(from_torch.numpy(), method(np.array(t, dtype=np.float32).astype(np.float64)))
        assert type(method(t[0])) is float
        assert from_numpy.shape == arr.shape
        assert method(arr.reshape(1, -1)).shape == (1, arr.size)


def test_calibrated_gradients_match_finite_differences() -> None:
    calibrated = calibrate(CosineSchedule(), 1000)
    t = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64, requires_grad=True)
    h = 1e-6
    for name in ("nu", "alpha_tilde", "sigma_tilde"):
        t.grad = None
        getattr(calibrated, name)(t).sum().backward()
        base = t.detach().numpy()
        method = getattr(calibrated, name)
        finite_difference = (method(base + h) - method(base - h)) / (2 * h)
        np.testing.assert_allclose(t.grad.numpy(), finite_difference, rtol=1e-5)


def test_calibrated_passthrough_and_description() -> None:
    schedule = PolynomialSchedule(power=1.5)
    calibrated = CalibratedSchedule(schedule, 50258)
    assert calibrate(schedule, 50258) == calibrated
    assert calibrated.alpha(0.4) == schedule.alpha(0.4)
    assert calibrated.elbo_weight(0.4) == schedule.elbo_weight(0.4)
    description = json.loads(json.dumps(calibrated.describe()))
    rebuilt = MaskSchedule.from_description(description)
    assert isinstance(rebuilt, CalibratedSchedule) and rebuilt == calibrated
    assert CalibratedSchedule.from_description(description) == calibrated


def test_calibrate_rejects_bad_arguments() -> None:
    for bad in (1, 0, -3):
        with pytest.raises(ValueError, match="vocab_size"):
            calibrate(LogLinearSchedule(), bad)
    with pytest.raises(ValueError, match="vocab_size"):
        calibrate(LogLinearSchedule(), np.int64(1))
    calibrated = calibrate(LogLinearSchedule(), 10)
    for bad in (-0.5, 2.0, math.nan):
        with pytest.raises(ValueError, match=r"^t "):
            calibrated.nu(bad)
        with pytest.raises(ValueError, match=r"^t "):
            calibrated.alpha_tilde(torch.tensor([bad]))
