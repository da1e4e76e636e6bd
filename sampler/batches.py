"""Every batch construction of the sampler.

Teacher batch: clean x0 ~ data, times t_b stratified over [t_min, 1), z_t = q(z_t | x0) masked
through `duality.q_sample` (each token visible independently with probability α(t)).

Distillation batch: one coupling noise per token (duality.MaskedCoupling) gives each token one
unmasking time τ, and z_t = x0 where t < τ else m, z_s = x0 where s < τ else m with s = t − dt:
the coupled pair of consistency distillation, visible(t) ⊆ visible(s).

Times: `stratified_times` t_b = low + (1 − low)·((u + b/B) mod 1), one shared u ~ U(0, 1),
covers [low, 1) evenly in every batch and lowers the loss variance.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from duality import q_sample
from theory.checks import check_dt, check_int, check_step_count  # noqa: F401  (check_dt, check_step_count: re-exported)

from .protocols import Schedule

T_MIN = 1e-3  # w(t) ~ 1/t as t -> 0 (log-linear); keeping t away from 0 bounds the weight


def stratified_times(
    batch_size: int, low: float = T_MIN, generator: torch.Generator | None = None, device: Any = "cpu"
) -> Float[Tensor, "B"]:
    """t_b = low + (1 − low)·((u + b/B) mod 1), u ~ U(0, 1) shared: stratified over [low, 1), float64.

    One uniform is drawn from `generator` (CPU), whatever the batch size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not 0.0 <= low <= 1.0:
        raise ValueError(f"low must be in [0, 1], got {low!r}")
    u = torch.rand((), generator=generator, dtype=torch.float64)
    grid = (u + torch.arange(batch_size, dtype=torch.float64) / batch_size) % 1.0
    return (low + (1.0 - low) * grid).to(device)


def teacher_batch(
    x0: Int[Tensor, "B L"],
    schedule: Schedule,
    mask_id: int,
    generator: torch.Generator | None = None,
    t: Float[Tensor, "B"] | None = None,
) -> tuple[Int[Tensor, "B L"], Float[Tensor, "B"]]:
    """(z_t, t): x0 masked by duality.q_sample at per-sequence times t (stratified_times when None).

    The generator lives on the CPU (reproducible across devices); z_t lands on x0's device.
    """
    if t is None:
        t = stratified_times(x0.shape[0], T_MIN, generator)
    elif tuple(t.shape) != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    z_t = q_sample(x0.cpu(), t.cpu(), schedule, mask_id, generator)
    return z_t.to(x0.device), t.to(x0.device)


def distillation_batch(
    x0: Int[Tensor, "B *rest"],
    coupling: Any,
    t: Float[Tensor, "B"] | float,
    dt: float | int,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Int[Tensor, "B *rest"], Int[Tensor, "B *rest"], Float[Tensor, "B"]]:
    """(z_t, z_s, s): the two masked states of one coupled path, s = max(t − dt, 0).

    The coupling noise (one per token, `coupling.sample_noise`) is drawn once and used at
    both times, so visible(t) ⊆ visible(s) and every visible token is the true x0 token.
    t is one time per sequence (a float is used for every sequence).
    """
    dt = check_dt(dt)
    if not isinstance(t, Tensor):
        t = torch.full((x0.shape[0],), float(t), dtype=torch.float64, device=x0.device)
    if t.dim() != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    if t.is_floating_point() and t.numel() and (bool(torch.isnan(t).any()) or float(t.min()) < 0 or float(t.max()) > 1):
        raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]")
    if noise is None:
        noise = coupling.sample_noise(x0, generator=generator)
    s = (t - dt).clamp(min=0.0)
    z_s, z_t = coupling.pair(x0, noise, s, t)
    return z_t, z_s, s
