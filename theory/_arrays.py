"""Array-kind plumbing shared by the numeric functions of `theory`.

Public functions accept Python floats, numpy arrays and torch tensors and return
the same kind: a torch tensor in gives a float64 tensor on the same device out,
a numpy array gives a float64 array, plain numbers give a Python float.  The
computation itself is always float64 numpy on the CPU.  torch is never imported
here: a tensor is recognised by its type's module, so `theory` stays importable
(and fast to import) without it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_float64(x: Any, name: str) -> np.ndarray:
    """`x` as a float64 numpy array; a clear ValueError naming `name` if it is not numeric."""
    if is_torch_tensor(x):
        return x.detach().to("cpu").double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number or array of real numbers, got {x!r}") from err
    return arr


def result_kind(*inputs: Any) -> Callable[[np.ndarray], Any]:
    """A function that converts a float64 numpy result back to the kind of `inputs`.

    torch wins over numpy, numpy over plain numbers; a torch result lands on the
    device of the first tensor input.
    """
    for x in inputs:
        if is_torch_tensor(x):
            import torch

            device = x.device

            def to_torch(r: np.ndarray) -> Any:
                return torch.as_tensor(np.asarray(r, dtype=np.float64), device=device)

            return to_torch
    if any(isinstance(x, np.ndarray) for x in inputs):
        return lambda r: np.asarray(r, dtype=np.float64)
    return lambda r: float(np.asarray(r).reshape(()))


def _plain(value: Any) -> int | float:
    """A numpy scalar as the plain Python number it prints as in an error message (2.0 -> 2)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def check_no_nan(arr: np.ndarray, name: str) -> None:
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (first at flat index {int(np.flatnonzero(np.isnan(arr))[0])})")


def check_vocab_size(vocab_size: Any, name: str = "vocab_size", *, integer: bool = False) -> np.ndarray | int:
    """Validate a vocabulary size K: integers >= 2; a ValueError naming `name` otherwise.

    Default (the numeric functions of `theory`): a scalar or array of any accepted kind (see
    `to_float64`; integer-valued floats such as 5.0 pass), returned as float64 values.
    `integer=True` (`duality`, where K is a tensor size): one Python or numpy integer, returned as int.
    """
    if integer:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {vocab_size!r}")
        return int(vocab_size)
    if isinstance(vocab_size, bool):
        raise ValueError(f"{name} must be an integer >= 2, got {vocab_size!r}")
    arr = to_float64(vocab_size, name)
    if arr.size == 0:
        return arr
    bad = ~np.isfinite(arr) | (arr < 2) | (arr != np.floor(arr))
    if bad.any():
        first = arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        raise ValueError(f"{name} must be an integer >= 2, got {_plain(first)!r}")
    return arr


def check_probability(arr: np.ndarray, name: str) -> None:
    check_no_nan(arr, name)
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        first = arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        raise ValueError(f"{name} must lie in [0, 1], got {_plain(first)!r}")


def is_integral_number(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
