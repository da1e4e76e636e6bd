"""theory: the masked duality operator, masked schedules and their Gaussian calibration, symbolic proofs.

alpha_K(nu) = ∫ φ(z − ν) Φ(z)^{K−1} dz is the probability that the clean token's
coordinate of w = ν·e_k + ε, ε ~ N(0, I_K), is the largest: the masked-diffusion
schedule that a Gaussian diffusion at signal-to-noise ν projects to.
"""

from .operator import (
    log_masked_alpha,
    masked_alpha,
    masked_alpha_deriv,
    nu_from_masked_alpha,
    uniform_alpha,
)
from .schedules import (
    CalibratedSchedule,
    CosineSchedule,
    LogLinearSchedule,
    MaskSchedule,
    PolynomialSchedule,
    calibrate,
)

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
