"""Masked-diffusion schedules α(t) on t ∈ [0, 1] and their Gaussian calibration.

A masked schedule gives the probability α(t) that a token is still visible at time t:
α decreasing, α(0) ≤ 1 (clean data when α(0) = 1), α(1) ≥ 0.  Every method accepts a
Python number, a numpy array or a torch tensor and returns the same kind:

* number -> float, numpy -> float64 array (computed in float64);
* torch -> tensor computed with torch operations on the tensor's device, in its dtype
  (integer tensors are promoted to float64), so gradients flow through α(t), α'(t),
  elbo_weight(t) and t_from_alpha(a).

The calibrated schedule (`CalibratedSchedule`, `calibrate`) is the Gaussian diffusion
whose projection to the masked process reproduces α(t) exactly: ν(t) = α_K⁻¹(α(t)) with
α_K(ν) = ∫ φ(z − ν) Φ(z)^{K−1} dz (theory.operator.masked_alpha).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from . import operator as _operator
from ._arrays import check_vocab_size, is_torch_tensor, result_kind, to_float64

ArrayLike = Any
"""A Python number, a numpy array or a torch tensor (beartype-friendly alias)."""

# Grid used to validate a schedule on construction (monotonicity, bounds, derivative).
_VALIDATION_GRID_SIZE = 1025
_FINITE_DIFFERENCE_STEP = 1e-6


# ----------------------------------------------------------------------------------
# array-kind plumbing
# ----------------------------------------------------------------------------------


def _first_bad_value(values: Any, bad: Any) -> float:
    if is_torch_tensor(values):
        return float(values.detach()[bad].reshape(-1)[0].item())
    return float(np.asarray(values)[bad].reshape(-1)[0])


def _prepare(x: Any, name: str, low: float, high: float, slack: float = 0.0) -> tuple[Any, Any, Callable[[Any], Any]]:
    """Validate `x` (no NaN, inside [low − slack, high + slack]) and return (values, xp, restore).

    `xp` is the module whose functions compute on `values` (numpy or torch); `restore`
    turns a result computed on `values` back into the kind of `x`.  Values in the slack
    band are clipped onto [low, high] (it absorbs round-off of computed inputs).
    """
    if is_torch_tensor(x):
        import torch

        values = x if torch.is_floating_point(x) else x.to(torch.float64)
        xp = torch
        nan = torch.isnan(values)
        if bool(nan.any()):
            raise ValueError(f"{name} contains NaN (got {x!r})")
        bad = (values < low - slack) | (values > high + slack)
        if bool(bad.any()):
            raise ValueError(f"{name} must lie in [{low!r}, {high!r}], got {_first_bad_value(values, bad)!r}")
        if slack > 0:
            values = torch.clip(values, low, high)
        return values, xp, lambda r: r
    if isinstance(x, bool):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    values = to_float64(x, name)
    if np.isnan(values).any():
        raise ValueError(f"{name} contains NaN (got {x!r})")
    bad = (values < low - slack) | (values > high + slack)
    if bad.any():
        raise ValueError(f"{name} must lie in [{low!r}, {high!r}], got {_first_bad_value(values, bad)!r}")
    if slack > 0:
        values = np.clip(values, low, high)
    if isinstance(x, np.ndarray):
        return values, np, lambda r: np.asarray(r, dtype=np.float64)
    return values, np, lambda r: float(np.asarray(r, dtype=np.float64).reshape(()))


def _full_like(xp: Any, like: Any, value: float) -> Any:
    if xp is np:
        return np.full(np.shape(like), value, dtype=np.float64)
    return xp.full_like(like, value)


def _as_kind_of(xp: Any, like: Any, value: Any) -> Any:
    """A user callable's result coerced to the computation kind of `like` (broadcast to its shape)."""
    if xp is np:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), np.shape(like)).copy()
    if is_torch_tensor(value):
        return value.to(dtype=like.dtype, device=like.device).expand_as(like)
    return xp.as_tensor(np.asarray(value, dtype=np.float64), dtype=like.dtype, device=like.device).expand_as(like)


def _check_real_parameter(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_eps(eps: Any) -> float:
    eps = _check_real_parameter(eps, "eps")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1), got {eps!r}")
    return eps


# ----------------------------------------------------------------------------------
# masked schedules
# ----------------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}


class MaskSchedule:
    """A masked-diffusion schedule α(t), t ∈ [0, 1]: the probability that a token is visible at t.

    Two ways to define one:

    * subclass and implement `_alpha(t, xp)` and `_alpha_deriv(t, xp)` (optionally
      `_one_minus_alpha`, `_t_from_alpha`, `params`), where `t` is a float64 numpy array or
      a torch tensor and `xp` the matching module (`numpy` or `torch`); set the class
      attribute `name` to make `describe()`/`from_description()` work, and call
      `super().__init__()` at the end of `__init__` so the schedule gets validated;
    * or pass callables: `MaskSchedule(alpha=lambda t: 1 - t**2, alpha_deriv=lambda t: -2*t)`.
      The callables receive numpy arrays or torch tensors; write them with arithmetic
      operators (or dispatch on the type) so torch inputs stay differentiable.

    Validation on construction (ValueError naming the quantity and the value otherwise),
    on a uniform grid of 1025 times: α finite, α(0) ≤ 1, α(1) ≥ 0, α non-increasing with
    α(0) > α(1); α′ finite and ≤ 0 at interior grid points and equal to a central finite
    difference of α (relative 1e-4); t_from_alpha inverts α on the grid (1e-8 in α).

    elbo_weight(t) = −α′(t)/(1 − α(t)) is the MDLM continuous-time weight of the
    reconstruction loss at time t.  It is finite for t > 0.  Where α(t) = 1 (t = 0 for a
    schedule starting from clean data) it is +inf: for the built-in schedules it grows like
    c/t as t → 0 (log-linear 1/t, polynomial p/t, cosine 2/t), so the ELBO integral is
    finite only because the per-token loss vanishes there; samplers draw t from (0, 1].
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _REGISTRY[cls.__dict__["name"]] = cls

    def __init__(
        self,
        alpha: Callable[[Any], Any] | None = None,
        alpha_deriv: Callable[[Any], Any] | None = None,
        t_from_alpha: Callable[[Any], Any] | None = None,
    ) -> None:
        if (alpha is None) != (alpha_deriv is None):
            raise ValueError(
                f"alpha and alpha_deriv must be given together, got alpha={alpha!r}, alpha_deriv={alpha_deriv!r}"
            )
        if alpha is not None and not callable(alpha):
            raise ValueError(f"alpha must be callable, got {alpha!r}")
        if alpha_deriv is not None and not callable(alpha_deriv):
            raise ValueError(f"alpha_deriv must be callable, got {alpha_deriv!r}")
        if t_from_alpha is not None and not callable(t_from_alpha):
            raise ValueError(f"t_from_alpha must be callable, got {t_from_alpha!r}")
        self._alpha_fn = alpha
        self._alpha_deriv_fn = alpha_deriv
        self._t_from_alpha_fn = t_from_alpha
        if alpha is None and type(self)._alpha is MaskSchedule._alpha:
            raise ValueError(
                "MaskSchedule needs alpha and alpha_deriv callables (or a subclass implementing _alpha), got alpha=None"
            )
        self._validate()

    # -- formulas (override in subclasses) -------------------------------------------------

    def _alpha(self, t: Any, xp: Any) -> Any:
        if self._alpha_fn is None:
            raise NotImplementedError
        return _as_kind_of(xp, t, self._alpha_fn(t))

    def _alpha_deriv(self, t: Any, xp: Any) -> Any:
        if self._alpha_deriv_fn is None:
            raise NotImplementedError
        return _as_kind_of(xp, t, self._alpha_deriv_fn(t))

    def _one_minus_alpha(self, t: Any, xp: Any) -> Any:
        return 1.0 - self._alpha(t, xp)

    def _t_from_alpha(self, a: Any, xp: Any, complement: bool) -> Any:
        """Default inverse: bisection in float64 (not differentiable for torch inputs)."""
        if self._t_from_alpha_fn is not None and not complement:
            return _as_kind_of(xp, a, self._t_from_alpha_fn(a))
        target = to_float64(a, "alpha")
        if complement:
            target = 1.0 - target
        lo = np.zeros_like(target)
        hi = np.ones_like(target)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._alpha(mid, np) > target  # α still above the target: the root is later
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        t = 0.5 * (lo + hi)
        if xp is np:
            return t
        return xp.as_tensor(t, dtype=a.dtype, device=a.device)

    def params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able."""
        return {}

    # -- public API ------------------------------------------------------------------------

    def alpha(self, t: ArrayLike) -> ArrayLike:
        """α(t): probability that a token is visible (not masked) at time t ∈ [0, 1]."""
        values, xp, restore = _prepare(t, "t", 0.0, 1.0)
        return restore(self._alpha(values, xp))

    def one_minus_alpha(self, t: ArrayLike) -> ArrayLike:
        """1 − α(t), the masking probability, computed without cancellation near t = 0."""
        values, xp, restore = _prepare(t, "t", 0.0, 1.0)
        return restore(self._one_minus_alpha(values, xp))

    def alpha_deriv(self, t: ArrayLike) -> ArrayLike:
        """α′(t) = dα/dt (≤ 0)."""
        values, xp, restore = _prepare(t, "t", 0.0, 1.0)
        return restore(self._alpha_deriv(values, xp))

    def t_from_alpha(self, alpha: ArrayLike, complement: bool = False) -> ArrayLike:
        """The time t with α(t) = alpha (the inverse schedule).

        alpha must lie in [α(1), α(0)] (ValueError otherwise; values within a few
        rounding units outside are clipped).  With complement=True the argument is 1 − α,
        which keeps relative accuracy for t near 0 where α is within rounding of 1.
        """
        a_hi = float(self._alpha(np.zeros(()), np))
        a_lo = float(self._alpha(np.ones(()), np))
        name = "alpha"
        if complement:
            a_lo, a_hi = 1.0 - a_hi, 1.0 - a_lo
            name = "1 - alpha (complement=True)"
        slack = 8.0 * float(np.finfo(np.float32 if _is_low_precision(alpha) else np.float64).eps) * max(1.0, abs(a_hi))
        values, xp, restore = _prepare(alpha, name, a_lo, a_hi, slack=slack)
        return restore(xp.clip(self._t_from_alpha(values, xp, complement), 0.0, 1.0))

    def elbo_weight(self, t: ArrayLike) -> ArrayLike:
        """−α′(t)/(1 − α(t)): MDLM's continuous-time ELBO weight; +inf where α(t) = 1 (t = 0)."""
        values, xp, restore = _prepare(t, "t", 0.0, 1.0)
        one_minus = self._one_minus_alpha(values, xp)
        deriv = self._alpha_deriv(values, xp)
        at_one = one_minus == 0
        safe = xp.where(at_one, _full_like(xp, one_minus, 1.0), one_minus)
        weight = xp.where(at_one, _full_like(xp, one_minus, math.inf), -deriv / safe)
        return restore(weight)

    def describe(self) -> dict[str, Any]:
        """JSON-able description {"name": ..., "params": {...}}; `MaskSchedule.from_description` rebuilds it."""
        if not type(self).__dict__.get("name") or self._alpha_fn is not None:
            raise ValueError(
                f"schedule {self!r} has no registered name (built from callables or an unnamed subclass); "
                "subclass MaskSchedule with a class attribute `name` to store it in a checkpoint"
            )
        return {"name": self.name, "params": dict(self.params())}

    @staticmethod
    def from_description(description: dict[str, Any]) -> "MaskSchedule | CalibratedSchedule":
        """Rebuild a schedule from `describe()` output (also accepts a CalibratedSchedule's description)."""
        if not isinstance(description, dict) or "name" not in description:
            raise ValueError(f"description must be a dict with a 'name' key, got {description!r}")
        name = description["name"]
        params = description.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"description['params'] must be a dict, got {params!r}")
        if name == CalibratedSchedule.name:
            return CalibratedSchedule.from_description(description)
        if name not in _REGISTRY:
            raise ValueError(f"description['name'] must be one of {sorted(_REGISTRY)}, got {name!r}")
        try:
            return _REGISTRY[name](**params)
        except TypeError as err:
            raise ValueError(f"description['params'] do not fit schedule {name!r}: {params!r} ({err})") from err

    def __repr__(self) -> str:
        if self._alpha_fn is not None:
            return f"MaskSchedule(alpha={self._alpha_fn!r}, alpha_deriv={self._alpha_deriv_fn!r})"
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if self._alpha_fn is not None or not isinstance(other, MaskSchedule):
            return self is other
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        if self._alpha_fn is not None:
            return id(self)
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))

    # -- validation ------------------------------------------------------------------------

    def _validate(self) -> None:
        grid = np.linspace(0.0, 1.0, _VALIDATION_GRID_SIZE)
        alpha = np.asarray(self._alpha(grid, np), dtype=np.float64)
        if not np.isfinite(alpha).all():
            i = int(np.flatnonzero(~np.isfinite(alpha))[0])
            raise ValueError(f"alpha must be finite on [0, 1], got alpha({float(grid[i])!r}) = {float(alpha[i])!r}")
        if alpha[0] > 1.0:
            raise ValueError(f"alpha(0) must be <= 1, got {float(alpha[0])!r}")
        if alpha[-1] < 0.0:
            raise ValueError(f"alpha(1) must be >= 0, got {float(alpha[-1])!r}")
        increases = np.flatnonzero(np.diff(alpha) > 0)
        if increases.size:
            i = int(increases[0])
            raise ValueError(
                f"alpha must be non-increasing in t, got alpha({float(grid[i])!r}) = {float(alpha[i])!r} "
                f"< alpha({float(grid[i + 1])!r}) = {float(alpha[i + 1])!r}"
            )
        if not alpha[0] > alpha[-1]:
            raise ValueError(f"alpha must decrease over [0, 1], got alpha(0) = alpha(1) = {float(alpha[0])!r}")

        inner = grid[1:-1]
        deriv = np.asarray(self._alpha_deriv(inner, np), dtype=np.float64)
        if not np.isfinite(deriv).all() or (deriv > 0).any():
            i = int(np.flatnonzero(~np.isfinite(deriv) | (deriv > 0))[0])
            raise ValueError(f"alpha_deriv must be finite and <= 0 on (0, 1), got alpha_deriv({float(inner[i])!r}) = {float(deriv[i])!r}")
        h = _FINITE_DIFFERENCE_STEP
        finite_diff = (self._alpha(inner + h, np) - self._alpha(inner - h, np)) / (2 * h)
        tolerance = 1e-4 * (np.abs(deriv) + 1e-3 * np.abs(deriv).max() + 1e-8)
        mismatch = np.flatnonzero(np.abs(finite_diff - deriv) > tolerance)
        if mismatch.size:
            i = int(mismatch[0])
            raise ValueError(
                f"alpha_deriv does not match the derivative of alpha: alpha_deriv({float(inner[i])!r}) = {float(deriv[i])!r}, "
                f"finite difference {float(finite_diff[i])!r}"
            )

        t_back = np.asarray(self._t_from_alpha(alpha, np, False), dtype=np.float64)
        alpha_back = self._alpha(np.clip(t_back, 0.0, 1.0), np)
        off = np.flatnonzero(~(np.abs(alpha_back - alpha) <= 1e-8))
        if off.size:
            i = int(off[0])
            raise ValueError(
                f"t_from_alpha does not invert alpha: t_from_alpha({float(alpha[i])!r}) = {float(t_back[i])!r}, "
                f"alpha of that = {float(alpha_back[i])!r}"
            )


def _is_low_precision(x: Any) -> bool:
    if is_torch_tensor(x):
        import torch

        return torch.is_floating_point(x) and torch.finfo(x.dtype).bits < 64
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float16)


class LogLinearSchedule(MaskSchedule):
    """α(t) = 1 − (1 − ε)·t (MDLM's log-linear schedule; σ(t) = −log α(t) is linear to first order).

    α′(t) = −(1 − ε); t(α) = (1 − α)/(1 − ε); elbo_weight = 1/t.  α(1) = ε (1e-3 by default)
    keeps a tiny fraction of tokens visible at t = 1, as in MDLM.
    """

    name: ClassVar[str] = "loglinear"

    def __init__(self, eps: float | int = 1e-3) -> None:
        self.eps = _check_eps(eps)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def _alpha(self, t: Any, xp: Any) -> Any:
        return 1.0 - (1.0 - self.eps) * t

    def _one_minus_alpha(self, t: Any, xp: Any) -> Any:
        return (1.0 - self.eps) * t

    def _alpha_deriv(self, t: Any, xp: Any) -> Any:
        return _full_like(xp, t, -(1.0 - self.eps))

    def _t_from_alpha(self, a: Any, xp: Any, complement: bool) -> Any:
        one_minus = a if complement else 1.0 - a
        return one_minus / (1.0 - self.eps)


class CosineSchedule(MaskSchedule):
    """α(t) = ε + (1 − ε)·cos(πt/2).

    1 − α(t) = 2(1 − ε)·sin²(πt/4); α′(t) = −(1 − ε)(π/2)·sin(πt/2);
    t(α) = (4/π)·arcsin(√((1 − α)/(2(1 − ε)))); elbo_weight ≈ 2/t near 0.
    """

    name: ClassVar[str] = "cosine"

    def __init__(self, eps: float | int = 1e-3) -> None:
        self.eps = _check_eps(eps)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def _alpha(self, t: Any, xp: Any) -> Any:
        return self.eps + (1.0 - self.eps) * xp.cos((math.pi / 2) * t)

    def _one_minus_alpha(self, t: Any, xp: Any) -> Any:
        return 2.0 * (1.0 - self.eps) * xp.sin((math.pi / 4) * t) ** 2

    def _alpha_deriv(self, t: Any, xp: Any) -> Any:
        return -(1.0 - self.eps) * (math.pi / 2) * xp.sin((math.pi / 2) * t)

    def _t_from_alpha(self, a: Any, xp: Any, complement: bool) -> Any:
        one_minus = a if complement else 1.0 - a
        ratio = xp.clip(one_minus / (2.0 * (1.0 - self.eps)), 0.0, 0.5)
        return (4.0 / math.pi) * xp.arcsin(xp.sqrt(ratio))


class PolynomialSchedule(MaskSchedule):
    """α(t) = 1 − (1 − ε)·t^p (power p > 0; p = 1 is the log-linear schedule).

    α′(t) = −(1 − ε)·p·t^(p−1) (−inf at t = 0 when p < 1); t(α) = ((1 − α)/(1 − ε))^(1/p);
    elbo_weight = p/t.
    """

    name: ClassVar[str] = "polynomial"

    def __init__(self, power: float | int = 2.0, eps: float | int = 1e-3) -> None:
        power = _check_real_parameter(power, "power")
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power!r}")
        self.power = power
        self.eps = _check_eps(eps)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"power": self.power, "eps": self.eps}

    def _alpha(self, t: Any, xp: Any) -> Any:
        return 1.0 - (1.0 - self.eps) * t**self.power

    def _one_minus_alpha(self, t: Any, xp: Any) -> Any:
        return (1.0 - self.eps) * t**self.power

    def _alpha_deriv(self, t: Any, xp: Any) -> Any:
        if self.power == 1.0:
            return _full_like(xp, t, -(1.0 - self.eps))
        if xp is np:
            with np.errstate(divide="ignore"):
                return -(1.0 - self.eps) * self.power * t ** (self.power - 1.0)
        return -(1.0 - self.eps) * self.power * t ** (self.power - 1.0)

    def _t_from_alpha(self, a: Any, xp: Any, complement: bool) -> Any:
        one_minus = a if complement else 1.0 - a
        ratio = xp.clip(one_minus / (1.0 - self.eps), 0.0, 1.0)
        return ratio ** (1.0 / self.power)


# ----------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------


class CalibratedSchedule:
    """The Gaussian latent schedule whose argmax projection reproduces a masked schedule exactly.

    For a masked schedule α(t) and K real tokens:

        ν(t) = α_K⁻¹(α(t)),   α_K(ν) = ∫ φ(z − ν) Φ(z)^{K−1} dz,
        α̃(t) = ν/√(1 + ν²),   σ̃(t) = 1/√(1 + ν²)   (α̃² + σ̃² = 1, ν = α̃/σ̃),

    so that the latent w_t = α̃(t)·e_k + σ̃(t)·ε, ε ~ N(0, I_K), keeps token k visible
    (k is the strict argmax) with probability exactly α(t).

    Negative ν.  α_K(0) = 1/K: with no signal the clean coordinate is the max by chance.
    Where α(t) < 1/K (e.g. the default α(1) = 1e-3 with K > 1000) the token must survive
    *less* often than chance, which only a signal of reversed sign achieves: the clean
    coordinate is pushed below the others.  Then ν(t) < 0 and α̃(t) < 0 (σ̃ stays positive);
    ν(t) = 0 exactly where α(t) = 1/K.

    Ends.  α(0) = 1 gives ν = +inf, α̃ = 1, σ̃ = 0 (the clean one-hot); α(1) = 0 gives
    ν = −inf, α̃ = −1, σ̃ = 0.

    ν is computed in float64 through theory.operator: nu_from_masked_alpha where α ≤ 1/2,
    and where α > 1/2 by Newton on log(1 − α_K(ν)) from the schedule's own 1 − α(t), so tiny
    masking rates (t near 0, where α rounds to 1) keep their relative accuracy.  Torch inputs give float64 tensors on the input's device; ν, α̃ and σ̃ are
    differentiable in t (dν/dt = α′(t)/α_K′(ν) by the implicit function theorem).
    The masked-schedule methods (alpha, alpha_deriv, one_minus_alpha, t_from_alpha,
    elbo_weight) pass through to the wrapped schedule.
    """

    name: ClassVar[str] = "calibrated"

    def __init__(self, schedule: MaskSchedule, vocab_size: int | np.integer) -> None:
        if not isinstance(schedule, MaskSchedule):
            raise ValueError(f"schedule must be a MaskSchedule, got {schedule!r}")
        check_vocab_size(vocab_size)
        if np.ndim(vocab_size) != 0:
            raise ValueError(f"vocab_size must be a single integer >= 2, got {vocab_size!r}")
        self.schedule = schedule
        self.vocab_size = int(vocab_size)

    # -- pass-through to the masked schedule -----------------------------------------------

    def alpha(self, t: ArrayLike) -> ArrayLike:
        """α(t) of the wrapped masked schedule."""
        return self.schedule.alpha(t)

    def one_minus_alpha(self, t: ArrayLike) -> ArrayLike:
        """1 − α(t) of the wrapped masked schedule."""
        return self.schedule.one_minus_alpha(t)

    def alpha_deriv(self, t: ArrayLike) -> ArrayLike:
        """α′(t) of the wrapped masked schedule."""
        return self.schedule.alpha_deriv(t)

    def t_from_alpha(self, alpha: ArrayLike, complement: bool = False) -> ArrayLike:
        """Inverse of the wrapped masked schedule."""
        return self.schedule.t_from_alpha(alpha, complement=complement)

    def elbo_weight(self, t: ArrayLike) -> ArrayLike:
        """−α′(t)/(1 − α(t)) of the wrapped masked schedule."""
        return self.schedule.elbo_weight(t)

    # -- Gaussian side -------------------------------------------------------------------

    def _nu_numpy(self, t: np.ndarray) -> np.ndarray:
        """ν(t) in float64 for validated t: the operator's inverse where α ≤ 1/2, else from 1 − α."""
        K = self.vocab_size
        alpha = np.asarray(self.schedule._alpha(t, np), dtype=np.float64)
        one_minus = np.asarray(self.schedule._one_minus_alpha(t, np), dtype=np.float64)
        nu = np.empty(np.shape(alpha), dtype=np.float64)
        lower = alpha <= 0.5
        if lower.any():
            nu[lower] = np.asarray(_operator.nu_from_masked_alpha(alpha[lower], K), dtype=np.float64)
        upper = ~lower
        if upper.any():
            nu[upper] = np.asarray(_operator.nu_from_masked_alpha(one_minus[upper], K, complement=True), dtype=np.float64)
        # α_K(0) = 1/K exactly, so the sign of ν is that of α − 1/K.  Within round-off of
        # 1/K an iterative inverse can land on the wrong side of 0; there the first-order
        # solution ν = (α − 1/K)/α_K′(0) is exact to float64.
        excess = alpha - 1.0 / K
        wrong_sign = (np.sign(nu) != np.sign(excess)) & np.isfinite(nu)
        if wrong_sign.any():
            slope_at_zero = float(_operator.masked_alpha_deriv(0.0, K))
            nu[wrong_sign] = excess[wrong_sign] / slope_at_zero
        return nu

    def nu(self, t: ArrayLike) -> ArrayLike:
        """ν(t) = α_K⁻¹(α(t)), the signal-to-noise ratio α̃/σ̃ (negative where α(t) < 1/K)."""
        if is_torch_tensor(t):
            _prepare(t, "t", 0.0, 1.0)
            return _nu_torch(self, t)
        values, _, _ = _prepare(t, "t", 0.0, 1.0)
        return result_kind(t)(self._nu_numpy(values))

    def alpha_tilde(self, t: ArrayLike) -> ArrayLike:
        """α̃(t) = ν/√(1 + ν²): signal coefficient (sign of ν; +1 at ν = +inf, −1 at −inf)."""
        if is_torch_tensor(t):
            return _signal_coefficient(self.nu(t), _torch_module())
        values, _, _ = _prepare(t, "t", 0.0, 1.0)
        return result_kind(t)(_signal_coefficient(self._nu_numpy(values), np))

    def sigma_tilde(self, t: ArrayLike) -> ArrayLike:
        """σ̃(t) = 1/√(1 + ν²): noise coefficient (0 at ν = ±inf); α̃² + σ̃² = 1."""
        if is_torch_tensor(t):
            return _noise_coefficient(self.nu(t), _torch_module())
        values, _, _ = _prepare(t, "t", 0.0, 1.0)
        return result_kind(t)(_noise_coefficient(self._nu_numpy(values), np))

    def nu_range(self) -> tuple[float, float]:
        """(ν(1), ν(0)): the interval of signal-to-noise ratios the schedule covers."""
        ends = self._nu_numpy(np.array([1.0, 0.0]))
        return float(ends[0]), float(ends[1])

    def t_from_nu(self, nu: ArrayLike) -> ArrayLike:
        """The time t with ν(t) = nu: t = α⁻¹(α_K(ν)); nu must lie in [ν(1), ν(0)]."""
        K = self.vocab_size
        nu_min, nu_max = self.nu_range()
        slack = 1e-9 * max(1.0, abs(nu_min), abs(nu_max) if math.isfinite(nu_max) else 1.0)
        values, _, _ = _prepare(nu, "nu", nu_min, nu_max, slack=slack)
        values = np.asarray(to_float64(values, "nu"))
        alpha = np.asarray(_operator.masked_alpha(values, K), dtype=np.float64)
        one_minus = np.asarray(_operator.masked_alpha(values, K, complement=True), dtype=np.float64)
        a_hi = float(self.schedule._alpha(np.zeros(()), np))
        a_lo = float(self.schedule._alpha(np.ones(()), np))
        alpha = np.clip(alpha, a_lo, a_hi)
        one_minus = np.clip(one_minus, 1.0 - a_hi, 1.0 - a_lo)
        use_complement = alpha > 0.5
        t = np.where(
            use_complement,
            self.schedule._t_from_alpha(one_minus, np, True),
            self.schedule._t_from_alpha(alpha, np, False),
        )
        return result_kind(nu)(np.clip(t, 0.0, 1.0))

    # -- bookkeeping -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """{"name": "calibrated", "params": {"schedule": <schedule description>, "vocab_size": K}}."""
        return {"name": self.name, "params": {"schedule": self.schedule.describe(), "vocab_size": self.vocab_size}}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "CalibratedSchedule":
        """Inverse of `describe()`."""
        if not isinstance(description, dict) or description.get("name") != cls.name:
            raise ValueError(f"description must be a dict with name {cls.name!r}, got {description!r}")
        params = description.get("params")
        if not isinstance(params, dict) or set(params) != {"schedule", "vocab_size"}:
            raise ValueError(f"description['params'] must have keys 'schedule' and 'vocab_size', got {params!r}")
        inner = MaskSchedule.from_description(params["schedule"])
        if not isinstance(inner, MaskSchedule):
            raise ValueError(f"description['params']['schedule'] must describe a masked schedule, got {params['schedule']!r}")
        return cls(inner, params["vocab_size"])

    def __repr__(self) -> str:
        return f"CalibratedSchedule({self.schedule!r}, vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CalibratedSchedule)
            and self.vocab_size == other.vocab_size
            and self.schedule == other.schedule
        )

    def __hash__(self) -> int:
        return hash((self.schedule, self.vocab_size))


def calibrate(schedule: MaskSchedule, vocab_size: int | np.integer) -> CalibratedSchedule:
    """The Gaussian calibration of `schedule` for `vocab_size` tokens: ν(t) = α_K⁻¹(α(t)) (see CalibratedSchedule)."""
    return CalibratedSchedule(schedule, vocab_size)


# ----------------------------------------------------------------------------------
# helpers for the Gaussian side
# ----------------------------------------------------------------------------------


def _torch_module() -> Any:
    import torch

    return torch


def _signal_coefficient(nu: Any, xp: Any) -> Any:
    """ν/√(1 + ν²), written as sign(ν)/√(1 + ν⁻²) for |ν| ≥ 1 so ±inf gives ±1 (and gradients stay finite)."""
    large = xp.abs(nu) >= 1
    one = _full_like(xp, nu, 1.0)
    nu_large = xp.where(large, nu, one)
    nu_small = xp.where(large, _full_like(xp, nu, 0.0), nu)
    return xp.where(large, xp.sign(nu_large) / xp.sqrt(1.0 + nu_large**-2), nu_small / xp.sqrt(1.0 + nu_small**2))


def _noise_coefficient(nu: Any, xp: Any) -> Any:
    """1/√(1 + ν²), written as |ν|⁻¹/√(1 + ν⁻²) for |ν| ≥ 1 so ±inf gives 0."""
    large = xp.abs(nu) >= 1
    one = _full_like(xp, nu, 1.0)
    nu_large = xp.where(large, nu, one)
    nu_small = xp.where(large, _full_like(xp, nu, 0.0), nu)
    return xp.where(large, 1.0 / (xp.abs(nu_large) * xp.sqrt(1.0 + nu_large**-2)), 1.0 / xp.sqrt(1.0 + nu_small**2))


def _nu_torch(calibrated: CalibratedSchedule, t: Any) -> Any:
    import torch

    t64 = t.detach().to("cpu", torch.float64).numpy()
    nu = torch.as_tensor(calibrated._nu_numpy(t64), dtype=torch.float64, device=t.device)
    if not (t.requires_grad and torch.is_grad_enabled()):
        return nu
    return _NuGrad.apply(t, nu, calibrated)


def _make_nu_grad() -> Any:
    import torch

    class NuGrad(torch.autograd.Function):
        """Attaches dν/dt = α′(t)/α_K′(ν) to a ν(t) computed outside torch."""

        @staticmethod
        def forward(ctx: Any, t: Any, nu: Any, calibrated: CalibratedSchedule) -> Any:
            t64 = t.detach().to("cpu", torch.float64).numpy()
            nu64 = nu.detach().to("cpu").numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.asarray(calibrated.schedule._alpha_deriv(t64, np), dtype=np.float64) / np.asarray(
                    _operator.masked_alpha_deriv(nu64, calibrated.vocab_size), dtype=np.float64
                )
            # At ν = ±inf (α = 1 or 0) the slope diverges: ν falls from +inf / to −inf.
            slope = np.where(np.isfinite(nu64) & np.isfinite(slope), slope, -np.inf)
            ctx.save_for_backward(torch.as_tensor(slope, device=t.device))
            ctx.input_dtype = t.dtype
            return nu.clone()

        @staticmethod
        def backward(ctx: Any, grad_nu: Any) -> Any:
            (slope,) = ctx.saved_tensors
            return (grad_nu * slope).to(ctx.input_dtype), None, None

    return NuGrad


class _LazyNuGrad:
    _fn: Any = None

    def apply(self, *args: Any) -> Any:
        if self._fn is None:
            type(self)._fn = _make_nu_grad()
        return self._fn.apply(*args)


_NuGrad = _LazyNuGrad()
