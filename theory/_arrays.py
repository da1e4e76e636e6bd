"""Array-kind plumbing shared by the numeric functions of `theory`.

Input rule (every public numeric function, every numeric argument): a real number (int, float or
a numpy scalar of those; not bool), a numpy array of integer or float dtype, a list or tuple
(nested) of real numbers, or a torch tensor of integer or float dtype.  Anything else (strings,
complex, bool, object arrays, ragged lists, None) is a ValueError naming the argument, raised
before any work.  The result has the kind of the inputs: a torch tensor in gives a float64 tensor
on the same device out, a numpy array, list or tuple gives a float64 numpy array, plain numbers give
a Python float.  The computation itself is always float64 numpy on the CPU.

torch is never imported here unless a tensor is passed: a tensor is recognised by its type's
module, so `theory` stays importable (and fast to import) without it.  A tensor that requires grad
goes through `differentiable`, a torch.autograd.Function whose backward multiplies by a slope the
caller computes (the operator's own derivative).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

_REAL_DTYPE_KINDS = "iuf"  # signed and unsigned integers, floats


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _describe(x: Any) -> str:
    if is_torch_tensor(x) or isinstance(x, np.ndarray):
        return f"a {type(x).__name__} of dtype {x.dtype}"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def to_float64(x: Any, name: str) -> np.ndarray:
    """`x` as a float64 numpy array, by the input rule of the module docstring; ValueError naming `name`."""
    if is_torch_tensor(x):
        import torch

        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must hold real numbers, got {_describe(x)}")
        if x.device.type == "meta":
            raise ValueError(f"{name} is a tensor on the meta device (shape only, no values); pass one that holds its values")
        return x.detach().to("cpu").double().numpy()
    if isinstance(x, (str, bytes)):
        raise ValueError(f"{name} must be a real number or an array, list or tensor of real numbers, got {_describe(x)}")
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name} must be a real number or an array, list or tensor of real numbers, got {_describe(x)}") from err
    if arr.dtype.kind in _REAL_DTYPE_KINDS:
        return arr.astype(np.float64, copy=False)
    if arr.ndim == 0 and isinstance(x, numbers.Real) and not isinstance(x, bool):
        try:
            return np.asarray(float(x))  # e.g. fractions.Fraction
        except OverflowError:
            raise ValueError(f"{name} must be a real number within float64's range (about 1.8e308), got {_describe(x)}") from None
    raise ValueError(f"{name} must be a real number or an array, list or tensor of real numbers, got {_describe(x)}")


def result_kind(*inputs: Any) -> Callable[[np.ndarray], Any]:
    """A function that converts a float64 numpy result back to the kind of `inputs`.

    torch wins over numpy (and lists, tuples), those over plain numbers; a torch result lands on
    the device of the first tensor input.
    """
    for x in inputs:
        if is_torch_tensor(x):
            import torch

            device = x.device

            def to_torch(r: np.ndarray) -> Any:
                return torch.as_tensor(np.asarray(r, dtype=np.float64), device=device)

            return to_torch
    if any(isinstance(x, (np.ndarray, list, tuple)) for x in inputs):
        return lambda r: np.asarray(r, dtype=np.float64)
    return lambda r: float(np.asarray(r).reshape(()))


def tracks_grad(x: Any) -> bool:
    """x is a torch tensor that autograd is recording (requires_grad, grad mode on)."""
    if not is_torch_tensor(x) or not x.requires_grad:
        return False
    import torch

    return torch.is_grad_enabled()


def differentiable(x: Any, evaluate: Callable[[Any], Any], slope: Callable[[Any, Any], Any]) -> Any:
    """y = evaluate(x) recorded by autograd as an elementwise function of the tensor x.

    `evaluate(x_detached)` returns a float64 tensor y (x broadcast against other, constant
    arguments); `slope(x_detached, y)` returns dy/dx elementwise, of y's shape, and is called in
    backward only: grad_x = sum_to_size(grad_y · slope, x.shape) in x's dtype.  Not twice
    differentiable (the slopes are computed in numpy).
    """
    return _elementwise_function().apply(x, evaluate, slope)


@functools.cache
def _elementwise_function() -> Any:
    import torch

    class ElementwiseFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, evaluate: Callable, slope: Callable) -> Any:
            y = evaluate(x.detach())
            ctx.slope = slope
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
            x, y = ctx.saved_tensors
            dy_dx = ctx.slope(x.detach(), y)
            return (grad * dy_dx).sum_to_size(x.shape).to(x.dtype), None, None

    return ElementwiseFunction


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
