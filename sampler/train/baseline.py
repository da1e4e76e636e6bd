"""The stochastic-baseline step (self-distillation through time, SDTT-style targets).

The student at (z_t, t) is trained toward the teacher's own ancestral rollout from z_t in two
half-steps t → t − dt/2 → t − dt (sampler.losses.baseline_targets: two teacher forward passes
per student step, MCD: one), with the divergence on every position masked in z_t.  z_t is the
coupling's masking of x0 at t, drawn from the step's own generator like MCD's batch.
"""

from __future__ import annotations

import torch

from ..device import autocast
from ..losses import baseline_targets, distillation_loss
from .context import DistillContext
from .loop import StepFn, StepOutput


def baseline_step(ctx: DistillContext) -> StepFn:
    """Baseline: z_t from one coupling noise, targets from the frozen teacher's two-half-step rollout."""

    def step(k: int) -> StepOutput:
        x0, t, generator = ctx.draw(k)
        with autocast(ctx.device):
            noise = ctx.coupling.sample_noise(x0, generator=generator)
            z_t = ctx.coupling.mask(x0, noise, t).to(ctx.device)
            targets, forwards = baseline_targets(
                ctx.frozen, z_t, t.to(ctx.device), ctx.dt, ctx.schedule, ctx.mask_id, ctx.temperature, generator
            )
            student_lp = ctx.trainee.forward(z_t, t.float().to(ctx.device))
            masked = z_t == ctx.mask_id
            loss, stats = distillation_loss(
                student_lp, targets, masked, torch.zeros_like(z_t), torch.zeros_like(masked), ctx.config.divergence
            )
        ctx.count_teacher_passes(forwards)
        return StepOutput(loss, stats)

    return step
