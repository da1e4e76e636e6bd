"""The stochastic baseline: self-distillation through time (SDTT-style targets).

The student at (z_t, t) is trained toward the teacher's own ancestral rollout from z_t in
two half-steps t → t − dt/2 → t − dt:

    q_l = p_T^{1/T}(· | z_t, t)            for a token l revealed in the first half-step,
    q_l = p_T^{1/T}(· | z_mid, t − dt/2)   for every other masked token (revealed in the
                                           second half-step, or still masked at t − dt:
                                           the last state of the rollout),

where z_mid is drawn by one ancestral step of the masked process.  The second half-step's
draw is never needed: both of its outcomes take the same target.  Two teacher forward
passes per student step (MCD: one).  Losses are those of sampler.distill (divergence
selectable, all positions soft targets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .distill import check_dt, temper

Denoiser = Callable[[Tensor, Tensor], Tensor]


def reveal_step(
    x0_probs: Float[Tensor, "B L K"],
    z_t: Int[Tensor, "B L"],
    t: Float[Tensor, "B"],
    s: Float[Tensor, "B"],
    schedule: Any,
    mask_id: int,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "B L"]:
    """One ancestral step t → s: a masked token is revealed with probability (α_s − α_t)/(1 − α_t)
    (per sequence) and takes a category drawn in float64 from x0_probs; visible tokens stay."""
    from duality.forward import posterior_step

    return posterior_step(x0_probs.double(), z_t, s, t, schedule, mask_id, generator)


@torch.no_grad()
def baseline_targets(
    teacher: Denoiser,
    z_t: Int[Tensor, "B L"],
    t: Float[Tensor, "B"],
    dt: float | int,
    schedule: Any,
    mask_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "B L K"], int]:
    """(target log-probs, teacher forward passes = 2) from the teacher's two-half-step rollout.

    The rollout's draw uses `generator` on the CPU (float64), so it is reproducible and
    independent of the device the teacher runs on.
    """
    dt = check_dt(dt)
    mid = (t.double() - dt / 2).clamp(min=0.0)
    first = temper(teacher(z_t, t.float()).float(), temperature)
    z_mid = reveal_step(first.detach().exp().cpu(), z_t.cpu(), t.double().cpu(), mid.cpu(), schedule, mask_id, generator)
    z_mid = z_mid.to(z_t.device)
    second = temper(teacher(z_mid, mid.to(z_t.device).float()).float(), temperature)
    revealed_first = (z_t == mask_id) & (z_mid != mask_id)
    return torch.where(revealed_first.unsqueeze(-1), first, second), 2
