"""The MCD step: the coupled pair (z_t, z_s) from one coupling noise per token (sampler.batches.distillation_batch),
the frozen teacher read at (z_s, s), the student at (z_t, t), and sampler.losses.mcd_loss between them
(cross-entropy where z_s revealed the token, the divergence to the tempered teacher where it still masks it)."""

from __future__ import annotations

import torch

from ..batches import distillation_batch
from ..device import autocast
from ..losses import mcd_loss
from .context import DistillContext
from .loop import StepFn, StepOutput


def mcd_step(ctx: DistillContext) -> StepFn:
    """MCD: (z_t, z_s) from one coupling noise, the frozen teacher read at (z_s, s), the student at (z_t, t)."""

    def step(k: int) -> StepOutput:
        x0, t, generator = ctx.draw(k)
        with autocast(ctx.device):
            z_t, z_s, s = distillation_batch(x0, ctx.coupling, t, ctx.dt, generator)
            z_t, z_s, x0 = z_t.to(ctx.device), z_s.to(ctx.device), x0.to(ctx.device)
            with torch.no_grad():
                teacher_lp = ctx.frozen(z_s, s.float().to(ctx.device)).float()
            student_lp = ctx.trainee.forward(z_t, t.float().to(ctx.device))
            loss, stats = mcd_loss(student_lp, teacher_lp, x0, z_t, z_s, ctx.mask_id, ctx.config.divergence, ctx.temperature,
                                   cross_entropy=not ctx.config.no_cross_entropy)
        ctx.count_teacher_passes(1)
        return StepOutput(loss, stats)

    return step


__all__ = ["mcd_step"]
