"""Coupled masked trajectories: one noise draw per token, masks at every time read from it.

For a calibrated schedule (ν(t) = α_K⁻¹(α(t)), decreasing in t) the latent w_t = α̃(t)·e_{x0} + σ̃(t)·ε
with ε shared across times projects to x0 iff

    Y := max_{j≠x0} ε_j − ε_{x0} < ν(t)          (Y has CDF α_K, so P(visible at t) = α(t)).

Each token therefore has one unmasking time τ = ν⁻¹(Y): visible at t iff t < τ, and the masks are
nested: for s < t every token visible in z_t is visible in z_s.  Three equal-in-law ways to draw it:

- "gaussian":  ε ∈ R^K per token (noise shape (*b, K)); z_t = project(w_t, x0), the definition, O(K).
- "threshold": only Y per token (noise shape (*b), float64), drawn exactly in O(1) as Y = M − ε_{x0},
               M the max of K − 1 standard normals by inverse CDF in log space (see
               `max_of_standard_normals`); visible at t iff Y < ν(t).  Memory and time do not grow with K.
- "uniform":   u = α_K(Y) per token (noise shape (*b), float64).  α_K is the CDF of Y, so u ~ U(0, 1)
               and we draw u directly; visible at t iff u < α(t) (α_K increasing, ν(t) = α_K⁻¹(α(t))).

Design choice for "gaussian": ε does not depend on x0 but the projection does, so `visible` and
`unmask_time` take x0 as a keyword argument that is required for that method only (`mask` and `pair`
always receive x0).  For "threshold" and "uniform" x0 is only used to check shapes.

Noise is checked on every read: sample_noise records on the tensor the method and K that drew it
(refused by a coupling of another method or K), and values must lie in the method's range (ε and Y
finite, u in (0, 1), no NaN; one min/max pass).  A copy loses the record, and uniform noise lies in
the range of Y, so hand-made uniform noise read by a "threshold" coupling cannot be told apart.

The unmasking time τ lies in [0, 1], or is +inf for a token that stays visible at every t in [0, 1]
(possible when α(1) > 0, e.g. the log-linear schedule's α(1) = ε).  `visible` compares the noise with
ν(t) (or α(t)) directly; `unmask_time` inverts the schedule, so the two agree up to the rounding of
that inversion at the boundary t ≈ τ.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from theory._arrays import check_vocab_size
from theory.protocols import Schedule

from ._checks import (
    check_generator,
    check_mask_id,
    check_not_meta,
    check_ordered_times,
    check_same_device,
    check_time,
    check_tokens,
    expand_time,
)
from .projection import _latent, project

METHODS = ("gaussian", "threshold", "uniform")
_CACHE_LIMIT = 4096
_SMALLEST_UNIFORM = torch.finfo(torch.float64).tiny
# Attribute set on the tensors sample_noise returns: (method, vocab_size) of the coupling that drew them.
_ORIGIN = "_masked_coupling_origin"


def max_of_standard_normals(
    uniform: Float[Tensor, "*batch"],
    count: int,
) -> Float[Tensor, "*batch"]:
    """Inverse CDF of M = max of `count` iid standard normals, P(M <= m) = Φ(m)^count:

        M = −Φ⁻¹(−expm1(log(v) / count))   (upper half, v^{1/count} >= 1/2)
        M =  Φ⁻¹(exp(log(v) / count))       (lower half),   v ∈ (0, 1].

    The upper branch uses 1 − Φ(M) = 1 − v^{1/count} = −expm1(log(v)/count), which keeps full
    relative precision for count = 10^7 and beyond (Φ⁻¹(v^{1/count}) would round v^{1/count} to 1);
    the lower branch keeps it for tiny v with small count.  float64.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    v = uniform.to(torch.float64)
    if v.numel() and (bool((v <= 0).any()) or bool((v > 1).any()) or bool(torch.isnan(v).any())):
        raise ValueError("uniform must lie in (0, 1]")
    return _max_of_normals_from_log_uniform(torch.log(v).div_(count))


def _max_of_normals_from_log_uniform(log_cdf: Tensor) -> Tensor:
    """M with log Φ(M) = log_cdf, using the smaller of Φ(M), 1 − Φ(M) so both tails keep precision."""
    lower = torch.exp(log_cdf)
    upper = torch.expm1(log_cdf).neg_()
    use_lower = lower < upper
    quantile = torch.special.ndtri(torch.minimum(lower, upper))
    return torch.where(use_lower, quantile, -quantile)


def sample_threshold(
    shape: tuple[int, ...],
    vocab_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Float[Tensor, "..."]:
    """Exact O(1)-per-token draw of Y = max_{j≠k} ε_j − ε_k, ε ~ N(0, I_K): Y = M − ε_k with M the
    max of K − 1 normals (`max_of_standard_normals`) and ε_k an independent N(0, 1).  float64.
    Draw order (for reproducibility): all uniforms for M, then all normals for ε_k.
    """
    vocab_size = check_vocab_size(vocab_size, integer=True)
    v = torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
    # torch.rand is in [0, 1); v = 0 (probability 2^-53) would give M = -inf.
    v.clamp_(min=_SMALLEST_UNIFORM)
    clean = torch.randn(shape, dtype=torch.float64, device=device, generator=generator)
    return _max_of_normals_from_log_uniform(torch.log(v).div_(vocab_size - 1)).sub_(clean)


def threshold_statistic(
    eps: Float[Tensor, "*e_batch K"],
    x0: Int[Tensor, "*x_batch"],
) -> Float[Tensor, "*x_batch"]:
    """Y = max_{j≠x0} ε_j − ε_{x0} of a materialised Gaussian noise (the token is visible at t iff Y < ν(t)).
    Returned in float64."""
    if not isinstance(eps, Tensor) or not eps.is_floating_point() or eps.ndim < 1 or eps.shape[-1] < 2:
        raise ValueError(f"eps must be a floating-point tensor of shape (*batch, K) with K >= 2, got {getattr(eps, 'shape', eps)!r}")
    check_tokens(x0, "x0", int(eps.shape[-1]))
    check_same_device(eps, "eps", x0, "x0")
    if tuple(eps.shape[:-1]) != tuple(x0.shape):
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has shape {tuple(x0.shape)}; need eps.shape[:-1] == x0.shape")
    eps64 = eps.to(torch.float64)
    index = x0.long().unsqueeze(-1)
    clean = torch.gather(eps64, -1, index).squeeze(-1)
    others = eps64.scatter(-1, index, float("-inf")).amax(dim=-1)
    return others - clean


class MaskedCoupling:
    """Coupled masked trajectories for a masking schedule α(t) over K real tokens (see module docstring).

        coupling = MaskedCoupling(LogLinearSchedule(), vocab_size=K, mask_id=K, method="threshold")
        noise = coupling.sample_noise(x0, generator)      # once per sequence batch
        z_t = coupling.mask(x0, noise, t)                 # any t in [0, 1], float or Tensor (B,)
        z_s, z_t = coupling.pair(x0, noise, s, t)         # s <= t: z_t's visible set ⊆ z_s's

    `schedule` is a theory MaskSchedule (alpha, t_from_alpha) or a CalibratedSchedule for this K; the
    calibration ν(t) (needed by "threshold" and "gaussian") is built lazily.  `noise_dtype` is the dtype
    of the Gaussian noise of method "gaussian" (the other methods always use float64).
    Times: a number in [0, 1] or a tensor whose shape is a prefix of x0's shape (per-sequence t of
    shape (B,), broadcast over the trailing dims).  ν(t) and α(t) of scalar and small per-sequence
    times are cached.
    """

    def __init__(
        self,
        schedule: Schedule,
        vocab_size: int,
        mask_id: int,
        method: str = "threshold",
        noise_dtype: torch.dtype = torch.float64,
    ) -> None:
        self.vocab_size = check_vocab_size(vocab_size, integer=True)
        self.mask_id = check_mask_id(mask_id, self.vocab_size)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        if not isinstance(noise_dtype, torch.dtype) or not noise_dtype.is_floating_point:
            raise ValueError(f"noise_dtype must be a floating torch.dtype, got {noise_dtype!r}")
        self.noise_dtype = noise_dtype
        for attribute in ("alpha",):
            if not callable(getattr(schedule, attribute, None)):
                raise ValueError(f"schedule must provide {attribute}(t), got {type(schedule).__name__}")
        if callable(getattr(schedule, "nu", None)):
            calibrated_k = getattr(schedule, "vocab_size", None)
            if calibrated_k is not None and int(calibrated_k) != self.vocab_size:
                raise ValueError(f"schedule is calibrated for vocab_size={calibrated_k}, not vocab_size={self.vocab_size}")
            self._calibrated = schedule
            self.schedule = getattr(schedule, "schedule", schedule)
        else:
            self._calibrated = None
            self.schedule = schedule
        self._nu_cache: dict[Any, Any] = {}
        self._alpha_cache: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return (
            f"MaskedCoupling(schedule={self.schedule!r}, vocab_size={self.vocab_size}, "
            f"mask_id={self.mask_id}, method={self.method!r})"
        )

    @property
    def calibrated(self) -> Any:
        """The CalibratedSchedule (ν(t), α̃(t), σ̃(t)) of this schedule at this K; built on first use."""
        if self._calibrated is None:
            from theory import calibrate

            self._calibrated = calibrate(self.schedule, self.vocab_size)
        return self._calibrated

    # ----------------------------------------------------------------- noise

    def sample_noise(
        self,
        x0: Int[Tensor, "*batch"],
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "..."]:
        """Per-token noise, drawn once and reused at every time:
        gaussian ε of shape (*x0.shape, K) (noise_dtype); threshold Y and uniform u of shape x0.shape
        (float64).  On x0's device; deterministic given `generator`.  The tensor records the method
        and K that drew it (an attribute; copies, slices and moves drop it), and the readers refuse
        noise recorded for another method or K."""
        check_tokens(x0, "x0", self.vocab_size)
        check_generator(generator, x0.device)
        shape = tuple(x0.shape)
        if self.method == "gaussian":
            noise = torch.randn(shape + (self.vocab_size,), dtype=self.noise_dtype, device=x0.device, generator=generator)
        elif self.method == "threshold":
            noise = sample_threshold(shape, self.vocab_size, generator=generator, device=x0.device)
        else:
            noise = torch.rand(shape, dtype=torch.float64, device=x0.device, generator=generator).clamp_(min=_SMALLEST_UNIFORM)
        setattr(noise, _ORIGIN, (self.method, self.vocab_size))
        return noise

    # ------------------------------------------------------------- reading

    def visible(
        self,
        noise: Float[Tensor, "..."],
        t: Any,
        x0: Int[Tensor, "*batch"] | None = None,
    ) -> Bool[Tensor, "*batch"]:
        """Which tokens are visible at time t (True = clean token shown).
        gaussian: project(w_t, x0) == x0 (x0 required); threshold: Y < ν(t); uniform: u < α(t)."""
        like = self._check_noise(noise, x0)
        t = check_time(t, "t", like)
        return self._visible(noise, t, x0)

    def mask(
        self,
        x0: Int[Tensor, "*batch"],
        noise: Float[Tensor, "..."],
        t: Any,
    ) -> Int[Tensor, "*batch"]:
        """z_t: x0 where visible at t, else mask_id."""
        check_tokens(x0, "x0", self.vocab_size)
        self._check_noise(noise, x0)
        t = check_time(t, "t", x0)
        return self._masked(x0, noise, t)

    def pair(
        self,
        x0: Int[Tensor, "*batch"],
        noise: Float[Tensor, "..."],
        s: Any,
        t: Any,
    ) -> tuple[Int[Tensor, "*batch"], Int[Tensor, "*batch"]]:
        """(z_s, z_t) from the same noise, s <= t (elementwise): every token visible in z_t is visible in z_s."""
        check_tokens(x0, "x0", self.vocab_size)
        self._check_noise(noise, x0)
        s = check_time(s, "s", x0)
        t = check_time(t, "t", x0)
        check_ordered_times(s, t)
        return self._masked(x0, noise, s), self._masked(x0, noise, t)

    def unmask_time(
        self,
        noise: Float[Tensor, "..."],
        x0: Int[Tensor, "*batch"] | None = None,
    ) -> Float[Tensor, "*batch"]:
        """τ per token, float64: visible at t iff t < τ.  τ = ν⁻¹(Y) (threshold, gaussian with
        Y = threshold_statistic(ε, x0)) or α⁻¹(u) (uniform); τ = 0 for a token masked already at t = 0,
        τ = +inf for a token visible at every t in [0, 1].  Per-token schedule inversion: not O(1) cheap."""
        self._check_noise(noise, x0)
        if self.method == "uniform":
            return self._invert(noise, self.schedule.alpha, self.schedule.t_from_alpha)
        statistic = threshold_statistic(noise, x0) if self.method == "gaussian" else noise
        return self._invert(statistic, self.calibrated.nu, self.calibrated.t_from_nu)

    # ------------------------------------------------------------ internals

    def _check_noise(self, noise: Tensor, x0: Tensor | None) -> Tensor:
        """Validate noise (and x0 when given); returns a tensor with the token batch shape."""
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            raise ValueError(f"noise must be a floating-point tensor from sample_noise, got {getattr(noise, 'dtype', type(noise))}")
        check_not_meta(noise, "noise")
        origin = getattr(noise, _ORIGIN, None)
        if origin is not None and origin != (self.method, self.vocab_size):
            raise ValueError(
                f"noise was drawn by the sample_noise of a coupling with method={origin[0]!r}, vocab_size={origin[1]}; "
                f"this coupling has method={self.method!r}, vocab_size={self.vocab_size}: draw it with this coupling"
            )
        if self.method == "gaussian":
            if x0 is None:
                raise ValueError("x0 is required for method='gaussian' (the projection needs the clean coordinate)")
            if noise.ndim < 1 or noise.shape[-1] != self.vocab_size:
                raise ValueError(f"noise must have shape (*x0.shape, K={self.vocab_size}) for method='gaussian', got {tuple(noise.shape)}")
            batch_shape = tuple(noise.shape[:-1])
        else:
            if noise.dtype != torch.float64:
                raise ValueError(f"noise must be float64 for method={self.method!r} (as sample_noise returns), got {noise.dtype}")
            batch_shape = tuple(noise.shape)
        if x0 is not None:
            if self.method == "gaussian":
                check_tokens(x0, "x0", self.vocab_size)
            elif not isinstance(x0, Tensor):
                raise ValueError(f"x0 must be a torch.Tensor of token ids, got {type(x0).__name__}")
            check_same_device(noise, "noise", x0, "x0")
            if batch_shape != tuple(x0.shape):
                raise ValueError(f"noise has shape {tuple(noise.shape)} which does not match x0 of shape {tuple(x0.shape)} for method={self.method!r}")
        self._check_noise_values(noise)
        return noise if x0 is None else x0

    def _check_noise_values(self, noise: Tensor) -> None:
        """Noise in the range its method draws: ε and Y finite, u in (0, 1); NaN refused.

        One min/max pass over the noise.  The ranges of Y (all reals) and u overlap, so uniform noise
        read by a threshold coupling passes this check; the origin record of `sample_noise` catches it.
        """
        if noise.numel() == 0:
            return
        low, high = (float(v) for v in torch.aminmax(noise))  # NaN anywhere makes both NaN
        if math.isnan(low):
            raise ValueError(f"noise contains NaN (method={self.method!r}); draw it with sample_noise")
        if self.method == "uniform":
            if not (low > 0.0 and high < 1.0):
                raise ValueError(
                    f"noise for method='uniform' must lie in (0, 1) (u = α_K(Y), as sample_noise draws), "
                    f"got values in [{low}, {high}]"
                )
        elif not (low > -math.inf and high < math.inf):
            raise ValueError(f"noise for method={self.method!r} must be finite, got values in [{low}, {high}]")

    def _gaussian_latent(self, x0: Tensor, noise: Tensor, t: float | Tensor) -> Tensor:
        """w_t = α̃(t)·onehot(x0) + σ̃(t)·ε with the coefficients taken from the cached ν(t)."""
        nu = self._cached(self._nu_cache, self.calibrated.nu, t)
        return _latent(x0, _signal_coefficient(nu), _noise_coefficient(nu), noise)

    def _visible(self, noise: Tensor, t: float | Tensor, x0: Tensor | None) -> Tensor:
        if self.method == "gaussian":
            return project(self._gaussian_latent(x0, noise, t), x0, self.mask_id) == x0
        if self.method == "threshold":
            nu = self._cached(self._nu_cache, self.calibrated.nu, t)
            return noise < expand_time(nu, noise.ndim)
        alpha = self._cached(self._alpha_cache, self.schedule.alpha, t)
        return noise < expand_time(alpha, noise.ndim)

    def _masked(self, x0: Tensor, noise: Tensor, t: float | Tensor) -> Tensor:
        if self.method == "gaussian":
            return project(self._gaussian_latent(x0, noise, t), x0, self.mask_id)
        visible = self._visible(noise, t, x0)
        return torch.where(visible, x0, torch.full_like(x0, self.mask_id))

    @staticmethod
    def _cached(cache: dict[Any, Any], function: Any, t: float | Tensor) -> Any:
        """function(t) (a float for a float t, a float64 tensor on t's device otherwise), memoised for
        scalar times and small per-sequence times."""
        if isinstance(t, Tensor):
            if t.numel() > 1024:
                return _to_float64_tensor(function(t), t)
            key: Any = (str(t.device), tuple(t.shape), tuple(t.reshape(-1).tolist()))
        else:
            key = t
        value = cache.get(key)
        if value is None:
            value = function(t)
            value = _to_float64_tensor(value, t) if isinstance(t, Tensor) else float(value)
            has_nan = bool(torch.isnan(value).any()) if isinstance(value, Tensor) else value != value
            if has_nan:
                raise ValueError(f"the schedule returned NaN at t={t!r}")
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = value
        return value

    def _invert(self, statistic: Tensor, forward: Any, inverse: Any) -> Tensor:
        """τ with forward(τ) = statistic for a decreasing `forward` (ν or α); 0 above forward(0), +inf below forward(1)."""
        at_start = float(forward(0.0))
        at_end = float(forward(1.0))
        statistic = statistic.to(torch.float64)
        inside = (statistic < at_start) & (statistic >= at_end)
        tau = torch.full_like(statistic, float("inf"))
        tau = torch.where(statistic >= at_start, torch.zeros_like(tau), tau)
        if bool(inside.any()):
            values = statistic[inside]
            times = _to_float64_tensor(inverse(values), values).clamp_(0.0, 1.0)
            tau[inside] = times
        return tau


def _signal_coefficient(nu: float | Tensor) -> float | Tensor:
    """α̃ = ν/√(1+ν²), written sign(ν)/√(1+ν⁻²) for |ν| >= 1 so that ν = ±inf gives ±1."""
    if isinstance(nu, Tensor):
        large = nu.abs() >= 1
        safe = torch.where(large, nu, torch.ones_like(nu))
        return torch.where(large, torch.sign(safe) / torch.sqrt(1 + safe**-2), nu / torch.sqrt(1 + nu * nu))
    if abs(nu) >= 1:
        return math.copysign(1.0, nu) / math.sqrt(1 + nu**-2)
    return nu / math.sqrt(1 + nu * nu)


def _noise_coefficient(nu: float | Tensor) -> float | Tensor:
    """σ̃ = 1/√(1+ν²), written 1/(|ν|·√(1+ν⁻²)) for |ν| >= 1 so that ν = ±inf gives 0."""
    if isinstance(nu, Tensor):
        large = nu.abs() >= 1
        safe = torch.where(large, nu, torch.ones_like(nu))
        return torch.where(large, 1 / (safe.abs() * torch.sqrt(1 + safe**-2)), 1 / torch.sqrt(1 + nu * nu))
    if abs(nu) >= 1:
        return 1.0 / (abs(nu) * math.sqrt(1 + nu**-2))
    return 1.0 / math.sqrt(1 + nu * nu)


def _to_float64_tensor(value: Any, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64).to(like.device)
