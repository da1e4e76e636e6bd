"""The shadow-student step (`mcd distill --method shadow`): distil the teacher's noise-shared rollout.

Per optimiser step: x0 from the source, a time t on the student's grid {1/N, ..., 1} (the stratified time
of the step rounded up to the grid, N = 1/dt of the round), reveal noise u from the coupling and z_t =
x0 where u says visible at t, and a fresh category noise c per token: the ShadowNoise (u, c).  The
frozen teacher's noise-shared rollout from z_t runs S = `shadow_substeps` sub-steps t = t_0 > t_1 > ...
> t_S = t − dt (sampler.shadow.noise.shadow_step, the sampler's own step); a token revealed at sub-step j is
drawn at quantile c from the teacher's (tempered) conditional at (z_{t_j}, t_j).

Design A ("soft"): the target of each token revealed in [t − dt, t) is that conditional q_j(· | z_{t_j}),
and the loss is forward KL, Σ_tokens KL(q_j ‖ p_student(· | z_t, t, noise)) / #tokens.  The target does
not depend on the token's own c (c is read only at its reveal, after the conditional is formed), so the
optimum is E[q_j | z_t, noise without c_i] and a quantile draw of the student at c_i keeps the
teacher's S-sub-step law; tokens revealed together are coordinated through the other tokens' noise.

Design B ("hard"): cross-entropy to the token z_{t − dt} that the rollout ends with.  That target is a
function of the token's own c, so a B student must not draw at c again (it would use c twice): it is
sampled by argmax (`sampler.shadow.student.ArgmaxShadowDenoiser`, recorded in its checkpoint).  If the network
cannot decode the noise, B collapses toward greedy decoding.

Teacher passes: one per sub-step that reveals something (at most S per step), counted in the run record.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from duality import MaskedCoupling
from theory.checks import check_int

from ..device import autocast
from ..losses import distillation_loss, temper
from ..model import DenoiserConfig
from ..protocols import Denoiser, Schedule
from ..shadow.noise import REVEAL_METHODS, ShadowNoise, shadow_step
from ..shadow.student import ShadowConfig, ShadowStudent, shadow_student_from_teacher
from .config import DistillConfig
from .context import DistillContext
from .loop import StepFn, StepOutput
from .runtime import unwrap

_TINY = torch.finfo(torch.float64).tiny


def check_substeps(substeps: Any, name: str = "shadow_substeps") -> int:
    """Teacher sub-steps per student step: theory.checks.check_int with minimum 1."""
    return check_int(substeps, name, 1)


@torch.no_grad()
def shadow_rollout_targets(
    teacher: Denoiser, coupling: MaskedCoupling, z_t: Int[Tensor, "B L"], t: Float[Tensor, " B"], dt: float, substeps: int,
    noise: ShadowNoise, temperature: float = 1.0,
) -> tuple[Float[Tensor, "B L K"], Bool[Tensor, "B L"], Int[Tensor, "B L"], int]:
    """(targets, revealed, z_end, teacher passes) of the teacher's noise-shared rollout t -> t − dt in
    `substeps` equal sub-steps: targets[b, l] = log q^{1/T}(· | z_{t_j}, t_j) at the sub-step j where
    token l of row b is revealed (revealed marks those tokens; elsewhere targets are 0), z_end = z_{t − dt}.
    ValueError, before any teacher call, when t − dt < 0 for a row (a step the grid cannot reach)."""
    substeps = check_substeps(substeps, "substeps")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    times = t.double()
    if bool((times - dt < -1e-12).any()) or bool((times > 1 + 1e-12).any()):
        raise ValueError(f"dt={dt} steps below time 0 from t in [{float(times.min()):.4g}, {float(times.max()):.4g}]: "
                         "the rollout cannot reach that step; t must lie in [dt, 1]")
    z = z_t
    targets: Tensor | None = None
    revealed = torch.zeros_like(z_t, dtype=torch.bool)
    passes = 0
    for j in range(substeps):
        start = (times - dt * j / substeps).clamp(min=0.0)
        stop = (times - dt * (j + 1) / substeps).clamp(min=0.0)
        z, reveal, log_probs = shadow_step(teacher, coupling, z, start, stop, noise, temperature)
        if log_probs is None:
            continue
        passes += 1
        tempered = temper(log_probs.float(), temperature)
        if targets is None:
            targets = torch.zeros_like(tempered)
        targets[reveal] = tempered[reveal]
        revealed |= reveal
    if targets is None:
        targets = torch.zeros(*z_t.shape, coupling.vocab_size, device=z_t.device)
    return targets, revealed, z, passes


def grid_times(t: Float[Tensor, " B"], dt: float) -> Float[Tensor, " B"]:
    """t rounded up to the student's grid {dt, 2dt, ..., 1} (float64)."""
    steps = round(1.0 / dt)
    return (torch.ceil(t.double() * steps - 1e-9) / steps).clamp(min=1.0 / steps, max=1.0)


def shadow_batch(
    x0: Int[Tensor, "B L"], coupling: MaskedCoupling, t: Float[Tensor, " B"], generator: torch.Generator,
) -> tuple[Int[Tensor, "B L"], ShadowNoise]:
    """(z_t, ShadowNoise): the coupling's reveal noise for x0 masked at t, and a fresh category noise."""
    if coupling.method not in REVEAL_METHODS:
        raise ValueError(f"coupling must be one of {REVEAL_METHODS} for the shadow student, got {coupling.method!r}")
    reveal = coupling.sample_noise(x0, generator=generator)
    z_t = coupling.mask(x0, reveal, t)
    category = torch.rand(x0.shape, dtype=torch.float64, generator=generator).clamp_(min=_TINY)
    return z_t, ShadowNoise(reveal.clone(), category, coupling.method, coupling.vocab_size)


def shadow_distill_step(ctx: DistillContext) -> StepFn:
    """Design A ("soft"): forward KL from the student at (z_t, t, noise) to the teacher's conditionals at each token's
    reveal.  Design B ("hard"): cross-entropy to the token the rollout ends with (sampled by argmax, never at c)."""
    substeps = check_substeps(ctx.config.shadow_substeps)
    hard = ctx.config.shadow_target == "hard"

    def step(k: int) -> StepOutput:
        x0, t, generator = ctx.draw(k)
        t = grid_times(t, ctx.dt)
        z_t, noise = shadow_batch(x0, ctx.coupling, t, generator)
        z_t, noise, t = z_t.to(ctx.device), noise.to(ctx.device), t.to(ctx.device)
        with autocast(ctx.device):
            targets, revealed, z_end, passes = shadow_rollout_targets(
                ctx.frozen, ctx.coupling, z_t, t, ctx.dt, substeps, noise, ctx.temperature)
            student_lp = ctx.trainee.forward(z_t, t.float(), noise=noise)
            if hard:  # design B: cross-entropy to the rollout's endpoint token
                loss, stats = distillation_loss(student_lp, targets, torch.zeros_like(revealed), z_end, revealed)
            else:  # design A: forward KL to the teacher's conditional at each token's reveal
                loss, stats = distillation_loss(student_lp, targets, revealed, torch.zeros_like(z_t),
                                                torch.zeros_like(revealed), "forward_kl")
        ctx.count_teacher_passes(passes)
        return StepOutput(loss, {**stats, "teacher_passes": passes})

    return step


def shadow_models(config: DistillConfig, model_config: DenoiserConfig, weights: dict[str, Tensor],
                  schedule: Schedule) -> tuple[ShadowStudent, ShadowStudent]:
    """(student, frozen teacher) of a shadow distillation: ShadowStudents whose base holds the teacher's weights
    (the student's noise weights zero-initialised from config.seed; the frozen copy is filled by the caller)."""
    shadow = ShadowConfig(draft=config.shadow_draft, head=config.shadow_head)
    student = shadow_student_from_teacher(weights, model_config, shadow, schedule, seed=config.seed)
    return student, ShadowStudent(model_config, shadow, schedule)


def shadow_meta(model: torch.nn.Module, reveal_method: str, target: str = "soft") -> dict[str, Any]:
    """meta["shadow"] of a shadow student: what `mcd sample` / `mcd eval` need to rebuild and sample it
    (draw: "quantile" at c for design A, "argmax" for design B, whose target already read c)."""
    return {"config": unwrap(model).shadow.to_dict(), "sampler": "noise_shared", "reveal_method": reveal_method,
            "draw": "argmax" if target == "hard" else "quantile"}


def shadow_checkpoint_meta(model: torch.nn.Module, config: DistillConfig) -> dict[str, Any]:
    """The entries a shadow student adds to its checkpoint's meta: {"shadow": shadow_meta(...)}."""
    return {"shadow": shadow_meta(model, config.coupling, config.shadow_target)}
