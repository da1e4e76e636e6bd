"""The two interfaces the sampler code is written against.

- `Denoiser`: any callable (z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K]
  (a `sampler.model.TransformerDenoiser`, an exact posterior such as
  `sampler.data.ExactDenoiser`, a test's toy function).
- `Schedule`: a masked-diffusion schedule α(t) as `theory.schedules` defines them; the
  sampler reads α(t), α′(t), the ELBO weight w(t) = −α′(t)/(1 − α(t)) and `describe()`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """log p(x0 | z_t) for every position and real token: (z: Int[B, L], t: Float[B]) -> Float[B, L, K]."""

    def __call__(self, z: Tensor, t: Tensor, /) -> Tensor: ...


@runtime_checkable
class Schedule(Protocol):
    """A masked schedule: α(t) = P(token visible at t), decreasing from α(0) = 1 to α(1) ≈ 0."""

    def alpha(self, t: Any) -> Any: ...

    def alpha_deriv(self, t: Any) -> Any: ...

    def elbo_weight(self, t: Any) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


__all__ = ["Denoiser", "Schedule"]
