"""What a distillation step function reads: `DistillContext` (models, data, coupling, the current round),
the step's own generator (`step_generator`), and `ExactTeacher` (the source's exact Bayes denoiser as the
frozen teacher).  Shared by `sampler.train.distill` (a checkpoint teacher), `sampler.api.distill_module`
(an in-memory teacher) and every method's step function (sampler.train.methods)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from duality import MaskedCoupling

from ..batches import stratified_times
from ..data import DataSource
from ..protocols import Schedule
from .config import DistillConfig
from .runtime import Trainee


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator of one optimiser step: the batch of step k depends only on (seed, rank, k),
    which makes resumption exact at any step and gives each DDP rank its own data."""
    mixed = (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 0x5EED) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


@dataclass
class DistillContext:
    """What the step functions read: the models, the data, the coupling and the current round."""

    trainee: Trainee
    frozen: torch.nn.Module  # the frozen teacher of the round
    source: DataSource
    coupling: MaskedCoupling
    schedule: Schedule
    config: DistillConfig
    counts: list  # int sampling steps per round (unparametrised, see LoopResult.losses)
    seq_len: int
    mask_id: int
    rank: int
    world: int
    device: torch.device
    round_index: int = 0
    dt: float = 1.0
    temperature: float = 1.0
    record: dict[str, Any] = field(default_factory=lambda: {
        "teacher_forward_passes": 0, "teacher_sequence_evals": 0, "wall_time_s": 0.0, "optimizer_steps": 0})

    def draw(self, step: int) -> tuple[Tensor, Tensor, torch.Generator]:
        """(x0, t, generator) of step k: a batch and stratified times over [dt, 1] from the step's own generator."""
        generator = step_generator(self.config.seed, self.rank, step)
        x0 = self.source.sample_batch(self.config.batch_size, self.seq_len, generator)
        return x0, stratified_times(self.config.batch_size, self.dt, generator), generator

    def count_teacher_passes(self, forwards: int) -> None:
        self.record["teacher_forward_passes"] += forwards * self.world
        self.record["teacher_sequence_evals"] += forwards * self.world * self.config.batch_size


class ExactTeacher(torch.nn.Module):
    """The frozen teacher of `exact_teacher=True`: the source's exact Bayes denoiser as a module without
    parameters (so device moves, checkpoints and resumes treat it like the network, with no "teacher.*" tensors).

        (z, t) -> log p(x0_l = k | the visible tokens of z),  Float32[B, L, K] over the K real tokens,

    by the source's forward-backward in float64 on the CPU, returned on z's device; SUBS at visible
    positions (0 on the token, −inf elsewhere), as the network's output.  t is only checked for shape:
    the posterior of masked diffusion does not depend on it.  ValueError naming --exact-teacher when
    the source has no exact denoiser (only the embedded 'exact' HMM source has one)."""

    def __init__(self, source: DataSource, mask_id: int) -> None:
        super().__init__()
        if not callable(getattr(source, "denoiser", None)):
            raise ValueError(f"--exact-teacher (exact_teacher=True) needs a source with an exact denoiser "
                             f"(the embedded 'exact' source); the teacher's source {source.name!r} has none")
        self.exact = source.denoiser(mask_id=mask_id, dtype=torch.float32)

    def forward(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"] | None = None) -> Float[Tensor, "B L K"]:
        return self.exact(z, t)


__all__ = ["DistillContext", "ExactTeacher", "step_generator"]
