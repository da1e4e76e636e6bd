"""theory: the masked duality operator, masked schedules and their Gaussian calibration, symbolic proofs.

alpha_K(nu) = ∫ φ(z − ν) Φ(z)^{K−1} dz is the probability that the clean token's
coordinate of w = ν·e_k + ε, ε ~ N(0, I_K), is the largest: the masked-diffusion
schedule that a Gaussian diffusion at signal-to-noise ν projects to.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule defining it, imported on first use: `theory.checks` (the argument checkers) stays
# torch-free, so the command line can check its arguments before torch loads
_LAZY = {
    "log_masked_alpha": ".operator",
    "masked_alpha": ".operator",
    "masked_alpha_deriv": ".operator",
    "nu_from_masked_alpha": ".operator",
    "uniform_alpha": ".operator",
    "CalibratedSchedule": ".schedules",
    "CosineSchedule": ".schedules",
    "LogLinearSchedule": ".schedules",
    "MaskSchedule": ".schedules",
    "PolynomialSchedule": ".schedules",
    "calibrate": ".schedules",
}

__all__ = [
    "masked_alpha",
    "masked_alpha_deriv",
    "log_masked_alpha",
    "nu_from_masked_alpha",
    "uniform_alpha",
    "MaskSchedule",
    "LogLinearSchedule",
    "CosineSchedule",
    "PolynomialSchedule",
    "CalibratedSchedule",
    "calibrate",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
