"""Typed configuration of the training commands, composed from shared parts.

Each field and its default is written once: `OptimConfig` (optimiser, warmup, clipping, EMA) and
`RunConfig` (output, seed, device, threads, cadence, stop) are the shared parts; `TrainConfig`
(`mcd train`) and `DistillConfig` (`mcd distill`) add their own fields and override a shared
default only where the command's default differs (distillation: lr 3e-4, warmup 20,
ema_decay 0.99, batch 64, saves every 100 and logs every 10 steps).

Checkpoints written before this layout stored `ema` (now `ema_decay`) and `steps` (now
`max_steps`) in meta["train_config"]; `from_dict` maps those names.

Resuming (`resumed_config`): the configuration stored with a run is its provenance and is never
rewritten.  A resumption may change where and how the run executes (`RESUME_FREE_FIELDS`: device,
threads, cadence of logs and saves, the stop step, ...); any other difference is refused with the
list of differing fields, except those named in `allow_changed` (only `OVERRIDABLE_FIELDS`: the
optimiser settings, batch size, seed), which are recorded in the run's meta["resumes"].  `seed=None`
means "the run's recorded seed" on a resume and 0 for a new run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from theory.checks import check_dt, check_seed, check_step_count
from theory.checks import check_int as _check_int

from .names import DIVERGENCES, PRESETS, check_evaluator_name

LEGACY_NAMES = {"ema": "ema_decay", "steps": "max_steps"}  # name in checkpoints before issue 9 -> name now
METHODS: tuple[str, ...] = ("mcd", "baseline", "shadow")
SHADOW_TARGETS: tuple[str, ...] = ("soft", "hard")
SHADOW_HEADS: tuple[str, ...] = ("input", "causal")
COUPLINGS: tuple[str, ...] = ("threshold", "gaussian", "uniform")
REFRESH_FROM: tuple[str, ...] = ("ema", "student")
MODEL_SIZES: tuple[str, ...] = tuple(PRESETS)
DEFAULT_MINUTES = 10.0  # mcd train's wall-clock budget when neither minutes nor max_steps is given
OBJECTIVES: tuple[str, ...] = ("mdlm", "ar")  # mcd train: the masked diffusion ELBO, or the autoregressive reference


# fields a resumed run may change without a word: where and how it runs, how often it logs and saves, when it stops
RESUME_FREE_FIELDS = frozenset({
    "out", "device", "threads", "save_every", "log_every", "max_steps", "minutes", "compile", "progress", "resume",
    "eval_every", "allow_changed", "teacher",  # a moved teacher directory is fine: its weights' digest is checked
})


def steps_from_dt(dt: Any, name: str = "dt") -> int:
    """The step count N with dt = 1/N; ValueError when 1/dt is not (close to) an integer."""
    dt = check_dt(dt, name)
    steps = round(1.0 / dt)
    if abs(steps * dt - 1.0) > 1e-9:
        raise ValueError(f"{name}={dt!r} is not 1/N for an integer step count N")
    return steps


def round_step_counts(start_steps: Any, target_steps: Any) -> list[int]:
    """Sampling step counts of the rounds: N0, N0/2, ..., target (dt_r = 2^r / N0 doubles each round).

    ValueError unless N0 / target is a power of two (target reachable by doubling dt).
    """
    start = check_step_count(start_steps, "start_steps")
    target = check_step_count(target_steps, "target_steps")
    if target > start:
        raise ValueError(f"target_steps={target} exceeds start_steps={start}; dt only grows (doubles) over the rounds")
    ratio = start // target
    if start % target or ratio & (ratio - 1):
        raise ValueError(
            f"target_steps={target} is not reachable by doubling dt from 1/{start}: "
            f"start_steps/target_steps must be a power of two"
        )
    counts = [start]
    while counts[-1] > target:
        counts.append(counts[-1] // 2)
    return counts


# Smallest teacher temperature: at T = 0.01 a 1-nat gap becomes 100 nats, a probability ratio e^100 ≈ 3e43 beyond
# float32's range, so the tempered float32 teacher is already argmax; lower T only moves log p / T towards overflow.
MIN_TEACHER_TEMPERATURE = 0.01


def teacher_temperature(
    round_index: int, start: float = 0.96, step: float = -0.03, floor: float = 0.75, enabled: bool = True
) -> float:
    """T_r = max(floor, start + step·r) for round r = 0, 1, ...; 1.0 when switched off.

    Defaults (0.96, −0.03 per round, floor 0.75): 0.96, 0.93, 0.90, ..., 0.75, 0.75, ...
    """
    if isinstance(round_index, bool) or round_index < 0:
        raise ValueError(f"round_index must be a non-negative integer, got {round_index!r}")
    if not enabled:
        return 1.0
    for name, value in (("temperature_start", start), ("temperature_floor", floor)):
        if not (math.isfinite(value) and value >= MIN_TEACHER_TEMPERATURE):
            raise ValueError(f"{name} must be a finite number >= {MIN_TEACHER_TEMPERATURE} (below it the tempered "
                             f"float32 teacher is argmax and its log p / T can overflow to a non-finite loss), got {value!r}")
    if not math.isfinite(step):
        raise ValueError(f"temperature_step must be finite, got {step!r}")
    return max(floor, start + step * round_index)


class ResumeRequiredError(ValueError):
    """A run directory that already holds a checkpoint, written to without `resume` (or `resume` without one).

    str() names the Python field (`resume=True`), for a caller of the library; `cli_message` names the
    command-line flag (`--resume`), which the `mcd` commands print instead."""

    def __init__(self, out: str, exists: bool, location: str = "out") -> None:
        self.out, self.exists, self.location = str(out), exists, location
        super().__init__(self._message("set resume=True in the config", f"config.{location}", "resume=True"))

    def _message(self, how: str, where: str, flag: str) -> str:
        if self.exists:
            return f"{where}={self.out!r} already holds a checkpoint; {how} to continue it, or choose another {where}"
        return f"{flag}: there is no checkpoint in {where}={self.out!r} to continue"

    @property
    def cli_message(self) -> str:
        return self._message("pass --resume", "--out", "--resume")


def check_resume(out: str, exists: bool, resume: bool) -> None:
    """The one resume rule of every command that writes a run directory: ResumeRequiredError when `out` holds a
    checkpoint (`exists`) and `resume` is off, or `resume` is on and it holds none."""
    if exists != bool(resume):
        raise ResumeRequiredError(out, exists)


LOSS_ACROSS_ROUNDS_NOTE = ("the loss can rise from one round to the next: each round's target is a larger step "
                           "(dt doubles), so the numbers of different rounds are not comparable")


def temperature_description(config: "DistillConfig", rounds: int) -> str:
    """The teacher-temperature schedule in words: "off (T = 1)" or its values over the rounds."""
    if not config.temperature:
        return "teacher temperature off (T = 1)"
    values = [teacher_temperature(r, config.temperature_start, config.temperature_step, config.temperature_floor)
              for r in range(rounds)]
    return "teacher temperature " + " → ".join(f"{t:g}" for t in values) + " (sharpens the student)"


def train_settings_line(config: "TrainConfig", minutes: float | None) -> str:
    """The settings of a teacher run that change its result, in one line (printed when it starts)."""
    objective = "autoregressive next-token loss" if config.objective == "ar" else f"masked diffusion ELBO ({config.schedule} schedule)"
    stop = " or ".join(part for part in (f"{config.max_steps} steps" if config.max_steps is not None else "",
                                        f"{minutes:g} minutes" if minutes is not None else "") if part)
    return (f"objective {objective}, stops at {stop}, batch {config.batch_size}, lr {config.lr:g}, "
            f"seed {config.seed}, data seed {config.data_seed}")


def distill_settings_line(config: "DistillConfig", counts: list[int]) -> str:
    """The settings of a distillation that change its result, in one line (printed when it starts)."""
    teacher = "exact Bayes denoiser of the source" if config.exact_teacher else f"network {config.teacher}"
    return (f"distill: method {config.method}, divergence {config.divergence}, {temperature_description(config, len(counts))}, "
            f"{len(counts)} round(s) of {config.steps_per_round} steps ({len(counts) * config.steps_per_round} in all), "
            f"sampling steps {' → '.join(map(str, counts))}, teacher: {teacher}")


def _normalise(value: Any) -> Any:
    """JSON round trips turn tuples into lists: compare them as lists."""
    return list(value) if isinstance(value, tuple) else value


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
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        _check_int(self.warmup, "warmup", 0)
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


# fields --allow-changed may override on a resume: the exact-resume state (weights, EMA, AdamW moments,
# RNG streams) stays valid under them; the run just continues with other settings
OVERRIDABLE_FIELDS = frozenset({f.name for f in fields(OptimConfig)} | {"batch_size", "seed"})
# a distillation may also change its length on a resume, when it has one round (no round boundary moves)
DISTILL_OVERRIDABLE_FIELDS = OVERRIDABLE_FIELDS | {"steps_per_round"}


@dataclass(kw_only=True)
class RunConfig:
    """Where a run writes, how it is seeded, where it runs and how often it logs and saves."""

    out: str
    seed: int | None = None  # None: the run's recorded seed when resuming, 0 for a new run
    device: str = "auto"
    threads: int | None = 1  # CPU torch threads (torch.set_num_threads); None leaves torch's default
    batch_size: int = 32
    save_every: int = 500
    log_every: int = 25
    max_steps: int | None = None  # total optimiser steps (a resumed run continues up to it)
    compile: bool = False
    progress: bool = True
    # OVERRIDABLE_FIELDS a resumption may change (recorded in meta["resumes"]); a tuple of str, unparametrised
    # because a runtime checker draws from the global `random` to check an item (an exact resume restores that state)
    allow_changed: tuple = ()
    overridable: ClassVar[frozenset] = OVERRIDABLE_FIELDS

    def validate_run(self) -> None:
        if self.seed is not None:
            _check_int(self.seed, "seed", 0)
        unknown = sorted(set(self.allow_changed) - self.overridable)
        if unknown:
            raise ValueError(f"allow_changed names {unknown}; only {sorted(self.overridable)} may change on a resume")
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
        if "allow_changed" in mapped:  # a JSON list
            mapped["allow_changed"] = tuple(mapped["allow_changed"])
        return cls(**mapped)

    @classmethod
    def effective_dict(cls, stored: dict[str, Any], resumes: list) -> dict[str, Any]:
        """A run's effective config as a dict: its stored config dict (`from_dict`, old names mapped) with each
        resumption's allowed changes ({"changed": {field: [old, new]}} in meta["resumes"]) applied in order."""
        effective = cls.from_dict(stored).to_dict()
        for record in resumes:
            effective.update({name: new for name, (_, new) in record.get("changed", {}).items()})
        return effective

    def resumed_config(self, stored: dict[str, Any], resumes: list) -> tuple["RunConfig", dict[str, Any]]:
        """(this config with seed resolved from the run, {field: [run's value, new value]} of the allowed changes)
        for resuming a run stored with config dict `stored` and earlier resumptions `resumes`.

        The run's effective config is `stored` with each earlier resumption's changes applied; every
        field outside RESUME_FREE_FIELDS must equal it unless named in allow_changed: ValueError listing
        the differing fields otherwise."""
        effective = type(self).effective_dict(stored, resumes)
        current = replace(self, seed=effective["seed"] if self.seed is None else self.seed).to_dict()
        differing = {k: [effective[k], current[k]] for k in current
                     if k not in RESUME_FREE_FIELDS and _normalise(current[k]) != _normalise(effective[k])}
        refused = sorted(set(differing) - set(self.allow_changed))
        if refused:
            listed = ", ".join(f"{k}: run {differing[k][0]!r}, now {differing[k][1]!r}" for k in refused)
            hint = (f"; to change {sorted(set(refused) & self.overridable)} on purpose pass --allow-changed FIELD"
                    if set(refused) & self.overridable else "")
            raise ValueError(f"out={self.out!r} holds a run with different settings ({listed}){hint}; "
                             f"or start afresh with another --out")
        return replace(self, seed=current["seed"]), differing


def check_resume_steps(max_steps: int | None, step: int, out: str) -> None:
    """ValueError when a resume asks for fewer total steps than the run has done: it would do nothing."""
    if max_steps is not None and max_steps < step:
        raise ValueError(f"max_steps (--steps) {max_steps} is below the step {step} that out={out!r} has reached, so this "
                         f"resume would do nothing; give --steps >= {step} to continue it")


@dataclass(kw_only=True)
class TrainConfig(RunConfig, OptimConfig):
    """Everything a teacher run depends on (stored in the checkpoint's meta["train_config"])."""

    data: str = "exact"
    data_seed: int = 0
    seq_len: int | None = None  # None: the source's default
    size: str = "tiny"
    objective: str = "mdlm"  # "ar": the same backbone with causal attention and a next-token loss (sampler.autoregressive)
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
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "ar" and self.time_conditioning:
            raise ValueError("time_conditioning applies to objective 'mdlm' only (an autoregressive model has no t)")
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
    # the teacher-temperature schedule T_r = max(floor, start + step·r) is off unless asked for (it sharpens the
    # student, so a student compared with its teacher would be tilted); the paper's schedule is the values below
    temperature: bool = False
    temperature_start: float = 0.96
    temperature_step: float = -0.03
    temperature_floor: float = 0.75
    no_cross_entropy: bool = False  # MCD only: drop the CE term on tokens z_s revealed (the "mcd-noce" control)
    vocab_size: int | None = None
    mask_id: int | None = None
    shadow_target: str = "soft"  # method "shadow": "soft" design A (teacher conditional at each reveal, forward KL); "hard" design B (CE to the rollout's endpoint; sampled by argmax)
    shadow_substeps: int = 2  # method "shadow": teacher sub-steps per student step (N_teacher / N_student)
    shadow_draft: bool = True  # method "shadow": the student reads provisional values (sampler.shadow.student)
    shadow_head: str = "input"  # method "shadow": "input" (noise features on the embeddings) or "causal" (sampler.shadow.causal_head: recall has a bound)
    exact_teacher: bool = False  # the frozen teacher is the source's exact Bayes denoiser, never refreshed (student still starts from --teacher)
    resume: bool = False  # continue the checkpoint in out (required when out holds one)
    # the distillation defaults of the shared fields
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 20
    ema_decay: float = 0.99
    save_every: int = 100
    log_every: int = 10
    overridable: ClassVar[frozenset] = DISTILL_OVERRIDABLE_FIELDS

    def validate(self) -> list[int]:
        """ValueError on any bad field; returns the rounds' sampling step counts."""
        for name, allowed in (("method", METHODS), ("coupling", COUPLINGS), ("divergence", DIVERGENCES), ("refresh_from", REFRESH_FROM)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.no_cross_entropy and self.method != "mcd":
            raise ValueError(f"no_cross_entropy applies to method 'mcd' only, got method={self.method!r}")
        counts = round_step_counts(self.start_steps, self.target_steps)
        if self.shadow_target not in SHADOW_TARGETS:
            raise ValueError(f"shadow_target must be one of {SHADOW_TARGETS}, got {self.shadow_target!r}")
        _check_int(self.shadow_substeps, "shadow_substeps", 1)
        if self.shadow_head not in SHADOW_HEADS:
            raise ValueError(f"shadow_head must be one of {SHADOW_HEADS}, got {self.shadow_head!r}")
        for name, default in (("shadow_head", "input"), ("shadow_target", "soft")):
            if self.method != "shadow" and getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} applies to method 'shadow' only, got method={self.method!r}")
        if self.method == "shadow" and self.coupling not in ("uniform", "threshold"):
            raise ValueError(f"coupling must be 'uniform' or 'threshold' for method='shadow' (per-token reveal noise), "
                             f"got {self.coupling!r}")
        check_step_count(self.steps_per_round, "steps_per_round")
        if "steps_per_round" in self.allow_changed and len(counts) > 1:
            raise ValueError(f"allow_changed steps_per_round: only a one-round run (start_steps == target_steps) may change "
                             f"its length on a resume; with rounds {counts} it would move the round boundaries")
        self.validate_optim()
        self.validate_run()
        for r in range(len(counts)):
            teacher_temperature(r, self.temperature_start, self.temperature_step, self.temperature_floor, self.temperature)
        if Path(self.teacher).resolve() == Path(self.out).resolve():
            raise ValueError(f"out={self.out!r} must differ from teacher={self.teacher!r}")
        return counts


@dataclass(kw_only=True)
class InferenceConfig:
    """The fields every command that reads a checkpoint shares (`mcd sample`, `mcd eval`)."""

    ckpt: str
    seed: int = 0
    out: str | None = None
    device: str = "auto"
    batch_size: int = 256
    no_ema: bool = False  # the raw weights instead of the EMA
    no_cache: bool = False  # call the network at every sampling step
    threads: int | None = 1  # CPU torch threads

    output_name: ClassVar[str] = ""  # a command's default output file name, formatted with the config's fields

    def output_file(self) -> Path:
        """`out`, or `output_name` (its {fields} filled in) next to the checkpoint: in the run directory, or beside
        its .safetensors file."""
        if self.out:
            return Path(self.out)
        if not self.output_name:
            raise ValueError(f"{type(self).__name__} has no default output name: give out")
        ckpt = Path(self.ckpt)
        return (ckpt if ckpt.is_dir() else ckpt.parent) / self.output_name.format(**asdict(self))


DEFAULT_EVAL_STEPS: list[int] = [1024, 256, 64, 16, 8, 4]  # mcd eval's step counts


def check_recall_k(max_k: Any, name: str = "recall_k") -> int:
    """`max_k` as an int that is a power of 4 (1, 4, 16, 64, ...): the k levels go up by factors of 4."""
    max_k = _check_int(max_k, name, 1)
    if 4 ** round(math.log(max_k, 4)) != max_k:
        raise ValueError(f"{name} must be a power of 4 (1, 4, 16, 64, 256, 1024, ...), got {max_k}")
    return max_k


@dataclass(kw_only=True)
class EvalConfig(InferenceConfig):
    """What `mcd eval` measures (see sampler.cli.eval for each field's meaning)."""

    output_name: ClassVar[str] = "eval-seed{seed}.json"  # the report's default name next to the checkpoint

    steps: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_STEPS))
    num: int = 256
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    evaluator: str = "auto"
    elbo_num: int = 512
    elbo_draws: int = 4
    oracle: bool = False
    recall_k: int = 64  # the largest k of the recall estimate (a power of 4; 0: no recall)
    recall_tolerance: float | None = 0.01  # stop raising k once |change k/4 -> k| + 2 SE <= this (None: go to recall_k)
    cost_repeats: int = 3  # one-thread timed draws per row (the median is reported)
    data: str | None = None  # the corpus of a text or n-gram run, named by the user (a path in the checkpoint is never read)

    def validate(self) -> None:
        """ValueError naming the command-line argument of any bad field (torch-free: `mcd eval` checks before
        it imports its back-end)."""
        if not self.steps:
            raise ValueError("--steps must list at least one step count")
        for steps in self.steps:
            _check_int(steps, "--steps", 1)
        for name in ("batch_size", "elbo_num", "elbo_draws", "cost_repeats"):
            _check_int(getattr(self, name), f"--{name.replace('_', '-')}", 1)
        _check_int(self.num, "--num", 2)  # two samples at least: a standard error
        if self.threads is not None:
            _check_int(self.threads, "--threads", 1)
        if not self.temperatures:
            raise ValueError("--temperatures must list at least one temperature")
        for temperature in self.temperatures:
            if isinstance(temperature, bool) or not (temperature > 0 and math.isfinite(temperature)):
                raise ValueError(f"--temperatures must be positive and finite, got {temperature}")
        check_seed(self.seed, "--seed")
        if self.recall_k != 0:
            check_recall_k(self.recall_k, "--recall-k")
        if self.recall_tolerance is not None and not (self.recall_tolerance > 0 and math.isfinite(self.recall_tolerance)):
            raise ValueError(f"--recall-tolerance must be positive and finite, got {self.recall_tolerance}")
        if self.evaluator not in ("auto", "none"):
            check_evaluator_name(self.evaluator)


# mcd bench-distill: the built-in arms (sampler.run.arms registers them) with their paper cut (start, target steps;
# None: the bench's own --start-steps/--target-steps), so `--arms` is checked before torch loads
BUILTIN_ARM_CUTS: dict[str, tuple[int, int] | None] = {
    "mcd": None, "baseline": None, "mcd-fkl": None, "baseline-fkl": None, "mcd-noce": None, "more-training": None,
    "mcd-equal-compute": None, "paper-1024-64": (1024, 64), "paper-256-16": (256, 16),
    "paper-baseline-1024-64": (1024, 64), "paper-baseline-256-16": (256, 16), "shadow-soft": None, "shadow-hard": None,
    "shadow-causal": None, "paper-shadow-1024-64": (1024, 64), "paper-shadow-256-16": (256, 16),
}
BENCH_DEFAULT_ARMS: tuple[str, ...] = ("mcd", "baseline", "mcd-noce", "mcd-fkl", "more-training", "mcd-equal-compute")
BENCH_EVAL_STEPS: tuple[int, ...] = (64, 16, 8, 4)
BENCH_SMOKE_EVAL_STEPS: tuple[int, ...] = (16, 4, 1)


def check_arm_names(names: Any, arm_cuts: dict[str, tuple[int, int] | None]) -> tuple[str, ...]:
    """The arm names as a tuple without repeats; ValueError naming --arms on an empty list or a name not in `arm_cuts`."""
    if isinstance(names, str) or not names:
        raise ValueError(f"--arms must be a non-empty list of arm names, got {names!r}")
    unknown = [n for n in names if n not in arm_cuts]
    if unknown:
        raise ValueError(f"--arms: unknown arm(s) {unknown}; known: {sorted(arm_cuts)}")
    return tuple(dict.fromkeys(names))


@dataclass
class BenchConfig:
    """What `mcd bench-distill` runs (see sampler.cli.bench_distill and sampler.run.bench); `smoke_config` the
    settings of `--smoke`.  `validate_settings` checks every field that needs no torch."""

    out: str = "runs/bench-distill"
    teacher: str | None = None  # reuse this teacher run instead of training one in OUT/teacher
    teacher_minutes: float | None = 10.0
    teacher_steps: int | None = None
    teacher_size: str = "tiny"
    seq_len: int | None = None
    arms: tuple[str, ...] = BENCH_DEFAULT_ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    start_steps: int = 64
    target_steps: int = 8
    steps_per_round: int = 100
    batch_size: int = 64
    lr: float = 3e-4
    divergence: str = "reverse_kl"
    temperature: bool = False  # teacher-temperature schedule during distillation (off: no built-in sharpening)
    coupling: str = "threshold"
    eval_steps: tuple[int, ...] = BENCH_EVAL_STEPS
    temperatures: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1)  # teacher and oracle sweeps (must hold 1.0)
    num_samples: int = 256
    heldout: int = 64
    k: int = 4  # the recall anchors' reveal patterns
    recall_k: int = 64  # the largest k of each row's recall (a power of 4)
    recall_tolerance: float | None = 0.01  # stop raising k once |change k/4 -> k| + 2 SE <= this
    cost_repeats: int = 3  # one-thread timed draws per row (median wall time per sample)
    ngram_orders: tuple[int, ...] = (1, 2, 3)
    num_bootstrap: int = 100
    z: float = 2.0
    check_samples: int = 0  # teacher samples of the fewest-vs-most-steps check (0: those of the table)
    check_anchors: bool = False
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 64
    sample_seed: int = 1234
    device: str = "cpu"
    progress: bool = True
    smoke: bool = False

    @classmethod
    def smoke_config(cls, out: str, **overrides: Any) -> "BenchConfig":
        base = dict(
            out=out, teacher_minutes=None, teacher_steps=250, teacher_lr=3e-3, teacher_batch_size=32, seq_len=32,
            arms=("mcd", "baseline", "mcd-noce", "more-training", "shadow-soft", "shadow-causal"), seeds=(0,), start_steps=8, target_steps=4,
            steps_per_round=4, batch_size=16, eval_steps=BENCH_SMOKE_EVAL_STEPS, temperatures=(0.8, 1.0, 1.25),
            num_samples=64, heldout=8, k=2, recall_k=4, recall_tolerance=None, cost_repeats=1, num_bootstrap=20,
            check_anchors=True,
            progress=False, smoke=True,
        )
        base.update(overrides)
        return cls(**base)

    def validate_settings(self, arm_cuts: dict[str, tuple[int, int] | None] = BUILTIN_ARM_CUTS) -> None:
        """ValueError naming the argument for any setting that is wrong in itself (torch-free): the arms (known in
        `arm_cuts`, each arm's rounds reachable), seeds, step counts, sizes, temperatures, recall and cost settings,
        learning rates and batch sizes.  sampler.run.bench.validate adds the checks that need the teacher."""
        self.arms = check_arm_names(self.arms, arm_cuts)
        for name in self.arms:
            round_step_counts(*(arm_cuts[name] or (self.start_steps, self.target_steps)))
        if not self.seeds:
            raise ValueError("seeds must name at least one training seed")
        for seed in self.seeds:
            check_seed(seed, "seeds")
        for name, values in (("eval_steps", self.eval_steps), ("ngram_orders", self.ngram_orders)):
            if not values:
                raise ValueError(f"{name} must not be empty")
            for value in values:
                _check_int(value, name, 1)
        for name in ("k", "num_bootstrap", "cost_repeats", "batch_size", "teacher_batch_size", "steps_per_round"):
            _check_int(getattr(self, name), name, 1)
        for name in ("heldout", "num_samples"):
            _check_int(getattr(self, name), name, 2)
        if 1.0 not in self.temperatures or not all(t > 0 and math.isfinite(t) for t in self.temperatures):
            raise ValueError(f"temperatures must be positive and hold 1.0, got {self.temperatures!r}")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures must be distinct, got {self.temperatures!r}")
        for name in ("z", "lr", "teacher_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        check_recall_k(self.recall_k, "recall_k")
        if self.recall_tolerance is not None and not (self.recall_tolerance > 0 and math.isfinite(self.recall_tolerance)):
            raise ValueError(f"recall_tolerance must be positive and finite, got {self.recall_tolerance!r}")


@dataclass(kw_only=True)
class SampleConfig(InferenceConfig):
    """What `mcd sample` draws (see sampler.cli.sample for each field's meaning)."""

    output_name: ClassVar[str] = "samples-{steps}steps-seed{seed}.jsonl"  # the samples' default name next to the checkpoint

    steps: int = 256
    num: int = 16
    seq_len: int | None = None
    temperature: float = 1.0
    final_greedy: bool = False
    prefix: str | None = None
    prefix_ids: str | None = None


TEXT_BENCH_STEPS: tuple[int, ...] = (1024, 256, 64, 16, 8, 4)  # the teacher's ancestral step counts by default
TEXT_BENCH_TEMPERATURES: tuple[float, ...] = (0.8, 0.9, 1.0)
RECALL_ESTIMATORS: tuple[str, ...] = ("plain", "smc")


@dataclass(kw_only=True)
class TextBenchConfig:
    """What `mcd bench-text` measures (sampler.run.text_bench; each field's meaning in sampler.cli.bench_text).

    `students` are "PATH" or "PATH:STEPS" specs; `confidence_steps=None` means the same as `steps`; `smoke` replaces
    the runs, corpus, evaluator and sizes by tiny ones made in a temporary directory (`validate` then checks only
    the settings that the smoke keeps: out, threads, device, seed)."""

    teacher: str | None = None
    ar: str | None = None
    students: tuple[str, ...] = ()
    data: str | None = None
    evaluator: str = "smollm2"
    steps: tuple[int, ...] = TEXT_BENCH_STEPS
    confidence_steps: tuple[int, ...] | None = None
    temperatures: tuple[float, ...] = TEXT_BENCH_TEMPERATURES
    num: int = 64
    recall_temperature: float = 1.0
    recall_num: int = 16
    recall_ks: tuple[int, ...] = (1, 4, 16)
    recall_estimator: str = "plain"
    recall_max_steps: int | None = None
    heldout_num: int = 1024
    nll_num: int = 256
    bootstrap: int = 100  # replicates of the n-gram JS standard errors
    seed: int = 0
    threads: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    include: tuple[str, ...] = ()
    smoke: bool = False
    out: str = "runs/text-bench"

    def validate(self) -> "TextBenchConfig":
        """ValueError naming the option, before any work (torch-free); returns self."""
        if not self.smoke:
            if self.teacher is None or self.data is None:
                raise ValueError("--teacher and --data are required (or pass --smoke)")
            for option, path in [("--teacher", self.teacher), ("--ar", self.ar),
                                 *[("--student", spec_path(spec)) for spec in self.students],
                                 *[("--include", path) for path in self.include]]:
                if path is not None and not Path(path).exists():
                    raise ValueError(f"{option} {path!r} does not exist")
            check_evaluator_name(self.evaluator)
        for name, minimum in (("num", 2), ("recall_num", 2), ("heldout_num", 2), ("nll_num", 2), ("threads", 1),
                              ("bootstrap", 2)):
            _check_int(getattr(self, name), f"--{name.replace('_', '-')}", minimum)  # >= 2: a standard error
        self._validate_lists()
        if self.recall_estimator not in RECALL_ESTIMATORS:
            raise ValueError(f"--recall-estimator must be one of {RECALL_ESTIMATORS}, got {self.recall_estimator!r}")
        _check_int(self.seed, "--seed", 0)
        if self.recall_max_steps is not None:
            _check_int(self.recall_max_steps, "--recall-max-steps", 1)
        return self

    def _validate_lists(self) -> None:
        if not self.recall_ks:
            raise ValueError("--recall-ks must list at least one k")
        for name in ("steps", "recall_ks", "confidence_steps"):
            values = getattr(self, name) or ()
            for value in values:
                _check_int(value, f"--{name.replace('_', '-')}", 1)
        if any(b != 4 * a for a, b in zip(self.recall_ks, self.recall_ks[1:])):
            raise ValueError(f"--recall-ks must each be 4 times the one before, got {list(self.recall_ks)}")
        if not self.temperatures:
            raise ValueError("--temperatures must list at least one temperature")
        for t in (*self.temperatures, self.recall_temperature):
            if not (t > 0 and math.isfinite(t)):
                raise ValueError(f"--temperatures / --recall-temperature must be positive and finite, got {t}")
        if self.recall_temperature not in self.temperatures:  # else no row would carry a recall
            raise ValueError(f"--recall-temperature {self.recall_temperature} must be one of --temperatures "
                             f"{list(self.temperatures)}")
        if self.ar is not None and self.recall_temperature != 1.0:
            raise ValueError(f"--recall-temperature must be 1 with --ar (the AR model's recall is its exact NLL at "
                             f"T = 1), got {self.recall_temperature}")
        for spec in self.students:
            student_steps(spec)


def spec_path(spec: str) -> str:
    """The run directory of a student spec "PATH" or "PATH:STEPS"."""
    head, _, tail = spec.rpartition(":")
    return head if head and tail.isdigit() else spec


def student_steps(spec: str) -> int | None:
    """The STEPS of a student spec "PATH:STEPS" (None for "PATH": its distillation's target steps);
    ValueError naming --student for STEPS < 1."""
    head, _, tail = spec.rpartition(":")
    if not (head and tail.isdigit()):
        return None
    if int(tail) < 1:
        raise ValueError(f"--student {spec!r}: STEPS must be a positive integer")
    return int(tail)
