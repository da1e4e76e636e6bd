"""Argument checks shared by theory, duality, sampler and proofs_checks: one integer checker."""

from __future__ import annotations

import numbers
from typing import Any


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """int(value) when it is an integer (Python or numpy, not a bool) >= minimum; else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


__all__ = ["check_int"]
