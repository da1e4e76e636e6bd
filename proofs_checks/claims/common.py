"""Helpers shared by the claims: chunked draws, random tokens, ν grids, conversions, names.

Every check in this package takes a Context (randomness, device, sizes, false-fail budget) and
keyword implementations whose defaults are the code the trainer uses; a mutant swaps one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

FLOAT_BUDGET = 4_000_000  # floats per materialised chunk (memory ~32 MB in float64)


def chunks(total: int, chunk: int) -> Iterator[int]:
    """Sizes of consecutive chunks that add up to `total`."""
    done = 0
    while done < total:
        size = min(chunk, total - done)
        done += size
        yield size


def random_tokens(size: int, vocab_size: int, generator: torch.Generator, device: torch.device) -> Int[Tensor, "n"]:
    """`size` tokens uniform on {0, …, K − 1}."""
    return torch.randint(0, vocab_size, (size,), generator=generator, device=device)


def gaussian_latents(
    size: int, vocab_size: int, generator: torch.Generator, device: torch.device
) -> tuple[Int[Tensor, "n"], Float[Tensor, "n K"], Float[Tensor, "n K"]]:
    """(x0, ε, e_x0): uniform tokens, standard normal ε ∈ R^K and the one-hot of x0 (float64), so
    that w = ν·e_x0 + ε is the materialised Gaussian latent at signal ν."""
    x0 = random_tokens(size, vocab_size, generator, device)
    eps = torch.randn(size, vocab_size, dtype=torch.float64, generator=generator, device=device)
    return x0, eps, torch.nn.functional.one_hot(x0, vocab_size).to(torch.float64)


def reference_threshold(size: int, vocab_size: int, generator: torch.Generator) -> Float[Tensor, "n"]:
    """Y = max_{j≠k} ε_j − ε_k by sorting-free inverse CDF of the max of K − 1 normals (a second,
    independent implementation, only used to place grids: any grid is valid for DKW)."""
    v = torch.rand(size, dtype=torch.float64, generator=generator).clamp_(min=1e-300)
    clean = torch.randn(size, dtype=torch.float64, generator=generator)
    top = -torch.special.ndtri(-torch.expm1(torch.log(v) / (vocab_size - 1)))
    return top - clean


def nu_grid(vocab_size: int, levels: tuple[float, ...], seed: int = 0) -> np.ndarray:
    """ν values near the `levels`-quantiles of Y (pilot draws; rounded to 1e-3).  DKW is
    uniform over all points, so a grid chosen from separate draws keeps the stated rates."""
    generator = torch.Generator().manual_seed(1234 + seed + vocab_size)
    pilot = reference_threshold(20_000, vocab_size, generator).numpy()
    return np.unique(np.round(np.quantile(pilot, levels), 3))


def as_numpy(value: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor (any device) or array-like."""
    if isinstance(value, Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def qualified_name(function: Any) -> str:
    """module.qualname of a function, class or callable object (what the report lists as checked)."""
    module = getattr(function, "__module__", None) or type(function).__module__
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{qualname}"


def checked_names(**implementations: Any) -> dict[str, str]:
    """{keyword: module.qualname} of the implementations a check exercised (the report's
    checked_implementations)."""
    return {key: qualified_name(function) for key, function in implementations.items()}


def empirical_below(sorted_values: Tensor, points: np.ndarray) -> np.ndarray:
    """Fraction of the (sorted) sample strictly below each point."""
    grid = torch.as_tensor(points, dtype=sorted_values.dtype, device=sorted_values.device)
    counts = torch.searchsorted(sorted_values, grid, side="left")
    return counts.cpu().double().numpy() / sorted_values.numel()

