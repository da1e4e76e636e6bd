"""Typed configuration of the training commands, composed from shared parts.

Each field and its default is written once: `OptimConfig` (optimiser, warmup, clipping, EMA) and
`RunConfig` (output, seed, device, threads, cadence, stop) are the shared parts; `TrainConfig`
(`mcd train`) and `DistillConfig` (`mcd distill`) add their own fields and override a shared
default only where the command's default differs (distillation: lr 3e-4, warmup 20,
ema_decay 0.99, batch 64, saves every 100 and logs every 10 steps).

Checkpoints written before this layout stored `ema` (now `ema_decay`) and `steps` (now
`max_steps`) in meta["train_config"]; `from_dict` maps those names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..batches import check_step_count
from ..losses import DIVERGENCES

LEGACY_NAMES = {"ema": "ema_decay", "steps": "max_steps"}  # name in checkpoints before issue 9 -> name now
METHODS: tuple[str, ...] = ("mcd", "baseline", "shadow")
SHADOW_TARGETS: tuple[str, ...] = ("soft", "hard")
COUPLINGS: tuple[str, ...] = ("threshold", "gaussian", "uniform")
REFRESH_FROM: tuple[str, ...] = ("ema", "student")
MODEL_SIZES: tuple[str, ...] = ("tiny", "mini", "small")


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW (weight decay on matrices only), linear warmup, gradient clipping, EMA of the weights."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999

    def validate_optim(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _check_int(self.warmup, "warmup", 0)
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


@dataclass(kw_only=True)
class RunConfig:
    """Where a run writes, how it is seeded, where it runs and how often it logs and saves."""

    out: str
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1  # CPU torch threads (torch.set_num_threads); None leaves torch's default
    batch_size: int = 32
    save_every: int = 500
    log_every: int = 25
    max_steps: int | None = None  # total optimiser steps (a resumed run continues up to it)
    compile: bool = False
    progress: bool = True

    def validate_run(self) -> None:
        _check_int(self.seed, "seed", 0)
        for name in ("batch_size", "save_every", "log_every"):
            _check_int(getattr(self, name), name, 1)
        if self.max_steps is not None:
            _check_int(self.max_steps, "max_steps", 0)
        if self.threads is not None:
            _check_int(self.threads, "threads", 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> "RunConfig":
        """The config from a checkpoint's dict, old names mapped (`ema` -> `ema_decay`, `steps` -> `max_steps`);
        ValueError on a name the config does not know."""
        names = {f.name for f in fields(cls)}
        mapped = {LEGACY_NAMES.get(k, k) if LEGACY_NAMES.get(k) in names else k: v for k, v in stored.items()}
        unknown = sorted(set(mapped) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}")
        return cls(**mapped)


@dataclass(kw_only=True)
class TrainConfig(RunConfig, OptimConfig):
    """Everything a teacher run depends on (stored in the checkpoint's meta["train_config"])."""

    data: str = "exact"
    data_seed: int = 0
    seq_len: int | None = None  # None: the source's default
    size: str = "tiny"
    time_conditioning: bool = False
    dropout: float = 0.0
    schedule: str = "loglinear"
    minutes: float | None = None  # wall-clock budget of this invocation (10 when max_steps is None too)
    eval_every: int = 500
    eval_batches: int = 4
    resume: bool = False

    def validate(self) -> None:
        self.validate_optim()
        self.validate_run()
        _check_int(self.data_seed, "data_seed", 0)
        for name in ("eval_every", "eval_batches"):
            _check_int(getattr(self, name), name, 1)
        if self.max_steps is not None:
            _check_int(self.max_steps, "max_steps", 1)
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"minutes must be a positive number, got {self.minutes!r}")
        if self.seq_len is not None:
            _check_int(self.seq_len, "seq_len", 1)


@dataclass(kw_only=True)
class DistillConfig(RunConfig, OptimConfig):
    """Everything that defines a distillation run (stored in its checkpoint's meta["distill"]["config"])."""

    teacher: str
    method: str = "mcd"
    coupling: str = "threshold"
    divergence: str = "reverse_kl"
    start_steps: int = 64
    target_steps: int = 8
    steps_per_round: int = 400
    refresh_from: str = "ema"
    temperature: bool = True
    temperature_start: float = 0.96
    temperature_step: float = -0.03
    temperature_floor: float = 0.75
    vocab_size: int | None = None
    mask_id: int | None = None
    shadow_target: str = "soft"  # method "shadow": "soft" design A (teacher conditional at each reveal, forward KL); "hard" design B (CE to the rollout's endpoint; sampled by argmax)
    shadow_substeps: int = 2  # method "shadow": teacher sub-steps per student step (N_teacher / N_student)
    shadow_draft: bool = True  # method "shadow": the student reads provisional values (sampler.shadow_model)
    # the distillation defaults of the shared fields
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 20
    ema_decay: float = 0.99
    save_every: int = 100
    log_every: int = 10

    def validate(self) -> list[int]:
        """ValueError on any bad field; returns the rounds' sampling step counts."""
        from .distill import round_step_counts, teacher_temperature

        for name, allowed in (("method", METHODS), ("coupling", COUPLINGS), ("divergence", DIVERGENCES), ("refresh_from", REFRESH_FROM)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        counts = round_step_counts(self.start_steps, self.target_steps)
        if self.shadow_target not in SHADOW_TARGETS:
            raise ValueError(f"shadow_target must be one of {SHADOW_TARGETS}, got {self.shadow_target!r}")
        _check_int(self.shadow_substeps, "shadow_substeps", 1)
        if self.method == "shadow" and self.coupling not in ("uniform", "threshold"):
            raise ValueError(f"coupling must be 'uniform' or 'threshold' for method='shadow' (per-token reveal noise), "
                             f"got {self.coupling!r}")
        check_step_count(self.steps_per_round, "steps_per_round")
        self.validate_optim()
        self.validate_run()
        for r in range(len(counts)):
            teacher_temperature(r, self.temperature_start, self.temperature_step, self.temperature_floor, self.temperature)
        if Path(self.teacher).resolve() == Path(self.out).resolve():
            raise ValueError(f"out={self.out!r} must differ from teacher={self.teacher!r}")
        return counts
