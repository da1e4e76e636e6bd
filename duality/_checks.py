"""Input validation shared by the `duality` modules.

Every public function of `duality` checks its arguments here and raises a
ValueError that names the argument and the offending value, so a bad call never
turns into a silent NaN or an out-of-range index further down.  Vocabulary sizes
are checked by `theory._arrays.check_vocab_size(..., integer=True)` (one rule for both packages).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor


def check_mask_id(mask_id: Any, vocab_size: int | None) -> int:
    """mask_id must be an integer >= 0 that is not a real token (real tokens are 0..K-1).

    The models use mask_id = K (one extra embedding row); a negative id would be emitted as a
    token id that indexes nothing (or, read by torch, the last row), so it is refused.
    """
    if isinstance(mask_id, Tensor) and mask_id.numel() == 1 and not mask_id.is_floating_point():
        mask_id = int(mask_id.item())
    if isinstance(mask_id, bool) or not isinstance(mask_id, numbers.Integral):
        raise ValueError(f"mask_id must be an integer, got {mask_id!r}")
    mask_id = int(mask_id)
    conventional = "" if vocab_size is None else f", conventionally {vocab_size}"
    if mask_id < 0:
        raise ValueError(f"mask_id must be >= 0 (it is emitted as a token id), got {mask_id}{conventional}")
    if vocab_size is not None and mask_id < vocab_size:
        raise ValueError(
            f"mask_id={mask_id} is a real token (real tokens are 0..{vocab_size - 1}); "
            f"use a mask_id outside [0, {vocab_size}){conventional}"
        )
    return mask_id


def check_tokens(x0: Tensor, name: str, vocab_size: int | None, mask_id: int | None = None) -> None:
    """x0 must be an integer tensor of real tokens: values in [0, vocab_size) (and != mask_id)."""
    if not isinstance(x0, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids, got {type(x0).__name__}")
    if x0.is_floating_point() or x0.is_complex() or x0.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of token ids, got dtype {x0.dtype}")
    check_not_meta(x0, name)
    if x0.numel() == 0:
        return
    low = int(x0.min())
    high = int(x0.max())
    if low < 0:
        raise ValueError(f"{name} contains token id {low} < 0; real tokens are 0..{'K-1' if vocab_size is None else vocab_size - 1}")
    if vocab_size is not None and high >= vocab_size:
        raise ValueError(f"{name} contains token id {high} outside [0, {vocab_size}) (vocab_size={vocab_size})")
    if vocab_size is None and mask_id is not None and bool((x0 == mask_id).any()):
        raise ValueError(f"{name} contains mask_id={mask_id}; it must hold clean tokens only")


def check_not_meta(x: Tensor, name: str) -> None:
    """A tensor on the meta device has a shape but no values: refused by name before it is read."""
    if x.device.type == "meta":
        raise ValueError(f"{name} is a tensor on the meta device (shape only, no values); pass one that holds its values")


def check_same_device(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{a_name} is on {a.device} but {b_name} is on {b.device}; put them on the same device")


def check_generator(generator: Any, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device} but the tensors are on {device}; use a generator on {device}")


def check_time(t: Any, name: str, like: Tensor | None) -> float | Tensor:
    """A time in [0, 1]: a Python/numpy real number, a 0-d tensor, or a tensor whose shape is a prefix
    of `like.shape` (per-sequence t of shape (B,), per-token t of shape (B, L), ...).

    Returns a Python float for scalars, otherwise a float64 tensor of `t`'s shape (not yet expanded).
    """
    if isinstance(t, Tensor):
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must be a real time in [0, 1], got a {t.dtype} tensor")
        check_not_meta(t, name)
        if like is not None:
            check_same_device(t, name, like, "x0")
        if t.ndim == 0:
            t = float(t.item())
        else:
            if like is not None and tuple(t.shape) != tuple(like.shape[: t.ndim]):
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}; a per-sequence time must have shape equal to the leading "
                    f"dimensions of x0 {tuple(like.shape)}, e.g. ({like.shape[0] if like.ndim else 'B'},)"
                )
            t = t.to(torch.float64)
            if t.numel() > 0:
                if bool(torch.isnan(t).any()):
                    raise ValueError(f"{name} contains NaN")
                low, high = float(t.min()), float(t.max())
                if low < 0.0 or high > 1.0:
                    raise ValueError(f"{name} must lie in [0, 1], got values in [{low}, {high}]")
            return t
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1] or a tensor of such, got {t!r}")
    value = float(t)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {t!r}")
    return value


def check_ordered_times(s: float | Tensor, t: float | Tensor, s_name: str = "s", t_name: str = "t") -> None:
    """s <= t elementwise (broadcasting a scalar against a tensor)."""
    if isinstance(s, float) and isinstance(t, float):
        if s > t:
            raise ValueError(f"{s_name}={s} must not exceed {t_name}={t}")
        return
    s_t = torch.as_tensor(s, dtype=torch.float64, device=t.device if isinstance(t, Tensor) else None)
    t_t = torch.as_tensor(t, dtype=torch.float64, device=s_t.device)
    try:
        bad = s_t > t_t
    except RuntimeError as err:
        raise ValueError(f"{s_name} of shape {tuple(s_t.shape)} and {t_name} of shape {tuple(t_t.shape)} do not broadcast") from err
    if bool(bad.any()):
        idx = int(torch.nonzero(bad.reshape(-1))[0])
        s_v = float(s_t.expand_as(bad).reshape(-1)[idx])
        t_v = float(t_t.expand_as(bad).reshape(-1)[idx])
        raise ValueError(f"{s_name} must not exceed {t_name}; got {s_name}={s_v} > {t_name}={t_v} (flat index {idx})")


def expand_time(value: float | Tensor, ndim: int) -> float | Tensor:
    """A per-sequence tensor reshaped to broadcast over the trailing dims of an `ndim`-dim tensor."""
    if isinstance(value, Tensor):
        return value.reshape(tuple(value.shape) + (1,) * (ndim - value.ndim))
    return value
