"""Argument checks shared by theory, duality, sampler and proofs_checks: one integer checker."""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """int(value) when it is an integer (Python or numpy, not a bool) >= minimum; else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


__all__ = ["check_int"]


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes any seed up to here on every device


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` as an int in 0..MAX_SEED (one rule for the library and the command line); ValueError naming
    `name` for a bool, a float, a string, a negative or a too large seed."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in 0..2**63 - 1, got {seed!r}")
    return int(seed)


def check_step_count(value: Any, name: str) -> int:
    """A step count: check_int with minimum 1."""
    return check_int(value, name, 1)


def check_dt(dt: Any, name: str = "dt") -> float:
    """dt must be a real number in (0, 1]."""
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not math.isfinite(float(dt)):
        raise ValueError(f"{name} must be a real number in (0, 1], got {dt!r}")
    if not 0.0 < float(dt) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {dt!r}")
    return float(dt)
