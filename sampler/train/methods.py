"""The distillation methods, one record each: its step function, how its student and frozen teacher are
built from the teacher's weights, what its checkpoint records, and which sampler reads the result.

`mcd distill` (sampler.train.distill), `sampler.distill_module` (an in-memory teacher) and the bench (through
`distill`) all read a method from here.  Adding a method: its step function (a module beside mcd.py), its
record below, and its name in sampler.train.config.METHODS (with any fields of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..model import DenoiserConfig, TransformerDenoiser
from ..protocols import Schedule
from .baseline import baseline_step
from .config import METHODS, DistillConfig
from .context import DistillContext
from .loop import StepFn
from .mcd import mcd_step
from .shadow import shadow_checkpoint_meta, shadow_distill_step, shadow_models

# (config, teacher model config, teacher weights, schedule) -> (student holding the teacher's weights, frozen teacher
# of the same type; its weights are set by the caller)
BuildModels = Callable[[DistillConfig, DenoiserConfig, dict[str, Tensor], Schedule], tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class DistillMethod:
    """One distillation method.

    name: its `--method` value.  step: DistillContext -> the loop's step function.  build_models: its student
    and frozen teacher from a checkpoint teacher's weights.  checkpoint_meta: (student, config) -> the entries it
    adds to its checkpoint's meta.  checkpoint_kind: the sampler.run.open kind that reads its checkpoint (and so
    its sampler).  module_teacher: None when `sampler.distill_module` can run it on an in-memory teacher, else why not.
    """

    name: str
    summary: str
    step: Callable[[DistillContext], StepFn]
    build_models: BuildModels
    checkpoint_meta: Callable[[nn.Module, DistillConfig], dict[str, Any]]
    checkpoint_kind: str
    module_teacher: str | None = None


def denoiser_models(config: DistillConfig, model_config: DenoiserConfig, weights: dict[str, Tensor],
                    schedule: Schedule) -> tuple[TransformerDenoiser, TransformerDenoiser]:
    """(student holding the teacher's weights, a fresh frozen TransformerDenoiser) for a method whose student
    is the teacher's network."""
    student = TransformerDenoiser(model_config)
    student.load_state_dict(weights, strict=True)
    return student, TransformerDenoiser(model_config)


def no_meta(model: nn.Module, config: DistillConfig) -> dict[str, Any]:
    """A plain denoiser student's checkpoint adds nothing: it is read as a teacher is."""
    return {}


DISTILL_METHODS: dict[str, DistillMethod] = {
    "mcd": DistillMethod("mcd", "masked consistency distillation: analytic coupled pairs from one noise per token",
                         mcd_step, denoiser_models, no_meta, "denoiser"),
    "baseline": DistillMethod("baseline", "stochastic baseline (SDTT-style): targets from the teacher's two half-steps",
                              baseline_step, denoiser_models, no_meta, "denoiser"),
    "shadow": DistillMethod("shadow", "noise-conditioned student: distils the teacher's noise-shared rollout",
                            shadow_distill_step, shadow_models, shadow_checkpoint_meta, "shadow",
                            module_teacher="its student is a ShadowStudent built around a TransformerDenoiser's weights; "
                                           "an in-memory module has no such network: distil a run directory with "
                                           "`mcd distill --method shadow` (sampler.distill_run)"),
}
if tuple(DISTILL_METHODS) != METHODS:
    raise ImportError(f"sampler.train.config.METHODS {METHODS} and the method records {tuple(DISTILL_METHODS)} differ")


def distill_method(name: str) -> DistillMethod:
    """The record of method `name`; ValueError naming the known ones."""
    if name not in DISTILL_METHODS:
        raise ValueError(f"method must be one of {tuple(DISTILL_METHODS)}, got {name!r}")
    return DISTILL_METHODS[name]


__all__ = ["DistillMethod", "DISTILL_METHODS", "distill_method", "denoiser_models"]
