"""The interfaces the sampler code is written against.

- `Denoiser`: any callable (z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K]
  (a `sampler.model.TransformerDenoiser`, an exact posterior such as
  `sampler.data.ExactDenoiser`, a test's toy function).
- `NoiseConditionedDenoiser`: a denoiser that also reads the shadow noise (z, t, noise=...); it
  declares `reads_shadow_noise = True`, and `reads_shadow_noise(x)` is the one check of it.
- `Schedule`: a masked-diffusion schedule α(t) (defined in `theory.protocols`, so `duality/` reads
  it too); the sampler reads α(t), α′(t), the ELBO weight w(t) = −α′(t)/(1 − α(t)) and `describe()`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from theory.protocols import Schedule


@runtime_checkable
class Denoiser(Protocol):
    """log p(x0 | z_t) for every position and real token: (z: Int[B, L], t: Float[B]) -> Float[B, L, K]."""

    def __call__(self, z: Tensor, t: Tensor, /) -> Tensor: ...


@runtime_checkable
class NoiseConditionedDenoiser(Protocol):
    """A denoiser that also reads the shadow noise: (z, t, noise=ShadowNoise of the batch) -> log p.
    It must set `reads_shadow_noise = True`; any other denoiser is called as (z, t)."""

    reads_shadow_noise: bool

    def __call__(self, z: Tensor, t: Tensor, *, noise: Any) -> Tensor: ...


def reads_shadow_noise(denoiser: Any) -> bool:
    """Whether `denoiser` is to be passed the shadow noise (it declares `reads_shadow_noise = True`)."""
    return getattr(denoiser, "reads_shadow_noise", False) is True


__all__ = ["Denoiser", "NoiseConditionedDenoiser", "Schedule", "reads_shadow_noise"]
