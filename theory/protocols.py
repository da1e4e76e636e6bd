"""The schedule interface, where both `duality/` and `sampler/` can read it.

`Schedule`: a masked-diffusion schedule α(t) as `theory.schedules` defines them; its users read
α(t), α′(t), the ELBO weight w(t) = −α′(t)/(1 − α(t)) and `describe()`.  `sampler.protocols`
re-exports it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Schedule(Protocol):
    """A masked schedule: α(t) = P(token visible at t), decreasing from α(0) = 1 to α(1) ≈ 0."""

    def alpha(self, t: Any) -> Any: ...

    def alpha_deriv(self, t: Any) -> Any: ...

    def elbo_weight(self, t: Any) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


__all__ = ["Schedule"]
