"""Compatibility module: the names `sampler.distill` held before the restructure of issue 9.

Their homes now: `distillation_batch` in sampler.batches, the losses in sampler.losses,
`DistillConfig` / `distill` in sampler.train.  New code imports from those.
"""

from .batches import distillation_batch
from .losses import distillation_loss, divergence, mcd_loss, temper
from .train.config import DistillConfig
from .train.distill import distill, round_step_counts, teacher_temperature

__all__ = ["distillation_batch", "distillation_loss", "divergence", "mcd_loss", "temper", "DistillConfig", "distill",
           "round_step_counts", "teacher_temperature"]
