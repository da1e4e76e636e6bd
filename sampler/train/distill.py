"""Masked consistency distillation (MCD): its step function, the rounds, and `distill(config)`.

MCD trains a few-step student from a masked-diffusion teacher.  The coupled pair of noisy
sequences that consistency distillation needs comes from one coupling noise per token
(duality.MaskedCoupling): each token has one unmasking time τ, and

    z_t = x0 where t < τ else m,        z_s = x0 where s < τ else m,        s = t − dt,

so z_s reveals a superset of z_t, always with the true tokens; no ODE solver, no teacher
rollout.  The loss on a position masked in z_t is

    −log p_student(x0 | z_t, t)                          where z_s has revealed x0,
    D(p_student(· | z_t, t), p_teacher^{1/T}(· | z_s, s)) where z_s still masks it,

averaged over the positions masked in z_t; D is reverse KL by default (forward KL, JS
selectable) and T the teacher temperature of the round: 1 unless a schedule is asked for (`temperature`; the paper's
T_r = max(0.75, 0.96 − 0.03·r) is `mcd distill --paper-temperature`).

Rounds r = 0, 1, ...: dt_r = 2^r / N0 doubles until 1/target_steps; at the start of each the
frozen teacher is refreshed from the student's EMA (or the student); the student starts as
the teacher.  With `exact_teacher` (`mcd distill --exact-teacher`) the frozen teacher is instead the
source's exact Bayes denoiser (`ExactTeacher`) in every round and for every method, never refreshed:
the targets carry no teacher error; the student still starts from the teacher network's weights.
The stochastic baseline (sampler.train.baseline) is another step function on the same loop, with
targets from the teacher's own two-half-step rollout.  One teacher forward pass per MCD step, two per
baseline step; both are counted.

The shared loop (sampler.train.loop) brings AdamW + warmup, grad clipping, EMA, bf16 autocast
on CUDA, DDP under torchrun; safetensors checkpoints holding student, EMA, frozen teacher and
optimiser state (exact resume mid-round: the batch of step k depends only on (seed, rank, k)),
JSONL metrics in RUN2/metrics.jsonl, tqdm progress.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from duality import MaskedCoupling
from theory.schedules import MaskSchedule

from .. import checkpoint as ckpt
from ..batches import check_dt, check_step_count
from ..data import DataSource, get_source
from ..device import pick_device
from ..model import DenoiserConfig
from ..protocols import Schedule
from ..rundir import check_output_path, run_dir_lock
from .config import (
    LOSS_ACROSS_ROUNDS_NOTE,
    check_resume,
    distill_settings_line,
    COUPLINGS,
    DistillConfig,
    METHODS,
    MIN_TEACHER_TEMPERATURE,
    REFRESH_FROM,
    check_resume_steps,
    round_step_counts,
    steps_from_dt,
    teacher_temperature,
)
from .context import DistillContext, ExactTeacher, step_generator
from .loop import LoopHooks, run_loop
from .mcd import mcd_step
from .methods import distill_method
from .runtime import (
    EMA,
    MetricsLogger,
    Trainee,
    build_optimizer,
    ddp_cleanup,
    check_compile_device,
    check_training_memory,
    ddp_setup,
    is_main_process,
    maybe_compile,
    truncate_metrics,
    unwrap,
    wrap_ddp,
)

RUN_KIND = "distilled"


# ---------------------------------------------------------------------------
# the step functions and the rounds hook


def rounds_hook(ctx: DistillContext, logger: MetricsLogger) -> Any:
    """before_step of the loop: at the first step of round r = k // steps_per_round the frozen teacher
    is refreshed from the student's EMA (or the student), except an exact teacher (config.exact_teacher),
    which stays; dt_r = 1/N_r and the temperature T_r are set."""
    config = ctx.config

    def before_step(k: int) -> None:
        ctx.round_index = k // config.steps_per_round
        if k % config.steps_per_round == 0:
            if not config.exact_teacher:  # an exact denoiser is the teacher of every round
                with torch.no_grad():
                    if config.refresh_from == "ema":
                        ctx.trainee.ema.copy_to(ctx.frozen)
                    else:
                        ctx.frozen.load_state_dict(unwrap(ctx.trainee.model).state_dict())
            note = {"note": LOSS_ACROSS_ROUNDS_NOTE} if ctx.round_index > 0 else {}
            logger.log({"event": "round", "step": k, "round": ctx.round_index, "sampling_steps": ctx.counts[ctx.round_index], **note})
        ctx.dt = 1.0 / ctx.counts[ctx.round_index]
        ctx.temperature = teacher_temperature(
            ctx.round_index, config.temperature_start, config.temperature_step, config.temperature_floor, config.temperature
        )

    return before_step


# ---------------------------------------------------------------------------
# `distill(config)`


def check_teacher_compatible(meta: dict[str, Any], source: DataSource, config: DistillConfig) -> None:
    """ValueError when the teacher's vocabulary / mask id disagree with its source or the requested ones."""
    model_config = meta.get("model_config") or {}
    vocab = model_config.get("vocab_size")
    mask_id = meta.get("mask_id", vocab)
    if vocab is None:
        raise ValueError(f"teacher={config.teacher!r} has no model_config.vocab_size")
    if mask_id != vocab:
        raise ValueError(f"teacher={config.teacher!r} has mask_id={mask_id!r}; models here use mask_id = vocab_size = {vocab}")
    if source.vocab_size != vocab:
        raise ValueError(f"teacher={config.teacher!r} has vocab_size={vocab} but its data source {source.name!r} has {source.vocab_size}")
    if config.vocab_size is not None and config.vocab_size != vocab:
        raise ValueError(f"vocab_size={config.vocab_size} was asked for but teacher={config.teacher!r} has vocab_size={vocab}")
    if config.mask_id is not None and config.mask_id != mask_id:
        raise ValueError(f"mask_id={config.mask_id} was asked for but teacher={config.teacher!r} has mask_id={mask_id}")


def _load_teacher(config: DistillConfig) -> tuple[dict[str, Tensor], dict[str, Any], DataSource, DenoiserConfig, Schedule]:
    """The teacher's tensors, meta, source, model config and schedule; ValueError before any work when they do not fit."""
    tensors, meta = ckpt.load_checkpoint(config.teacher)
    if "model_config" not in meta or "source" not in meta or "schedule" not in meta:
        raise ValueError(f"teacher={config.teacher!r} is not a denoiser checkpoint (needs model_config, source, schedule in its meta)")
    _check_teacher_meta(meta, config.teacher)
    source = get_source(**meta["source"])
    check_teacher_compatible(meta, source, config)
    return tensors, meta, source, DenoiserConfig.from_dict(meta["model_config"]), MaskSchedule.from_description(meta["schedule"])


def _check_teacher_meta(meta: dict[str, Any], teacher: str) -> None:
    """ValueError naming --teacher for a shadow student (its weights need a noise input a teacher does not have)
    or metadata of the wrong kind (crafted: the digest is a checksum anyone can re-seal)."""
    if "shadow" in meta:
        raise ValueError(f"teacher={teacher!r} is a shadow student (it reads per-token noise): distill from a plain "
                         "denoiser (a run of mcd train, or an mcd or baseline student)")
    for name in ("model_config", "source"):
        if not isinstance(meta[name], dict):
            raise ValueError(f"teacher={teacher!r} has a malformed checkpoint: meta[{name!r}] must be a mapping, "
                             f"got {type(meta[name]).__name__} {meta[name]!r:.60}")
    if "spec" not in meta["source"]:
        raise ValueError(f"teacher={teacher!r} has a malformed checkpoint: meta['source'] names no 'spec'")


def teacher_weights_digest(teacher_tensors: dict[str, Tensor]) -> str:
    """SHA-256 (checkpoint.tensor_digest) of the teacher weights a student starts from: its "model.*" and "ema.*" tensors."""
    return ckpt.tensor_digest({k: v for k, v in teacher_tensors.items() if k.startswith(("model.", "ema."))})


def _previous_run(
    config: DistillConfig, model_config: DenoiserConfig, teacher_digest: str
) -> tuple[dict[str, Tensor] | None, dict[str, Any], DistillConfig, dict[str, Any]]:
    """(tensors, meta, config with seed resolved, the allowed changes) of the run already in config.out
    ((None, {}, config, {}) when there is none); ValueError when it is another kind of run, was distilled
    from other teacher weights, was started with settings that may not change (RunConfig.resumed_config), or
    would get a shorter round (steps_per_round may only grow)."""
    exists = ckpt.checkpoint_path(config.out).is_file()
    check_resume(config.out, exists, config.resume)
    if not exists:
        return None, {}, replace(config, seed=0 if config.seed is None else config.seed), {}
    tensors, meta = ckpt.load_checkpoint(config.out)
    if meta.get("kind") != RUN_KIND:
        raise ValueError(f"out={config.out!r} holds a checkpoint that is not a distillation run; choose another directory")
    if meta.get("model_config") != model_config.to_dict():
        raise ValueError(
            f"out={config.out!r} was distilled from a teacher with model_config {meta.get('model_config')}, "
            f"not {model_config.to_dict()} (different vocabulary, mask id or shape)"
        )
    recorded = meta["distill"].get("teacher_digest")
    if recorded is not None and recorded != teacher_digest:
        raise ValueError(
            f"out={config.out!r} was distilled from other teacher weights than those in teacher={config.teacher!r} "
            f"(weights digest {recorded[:12]}… recorded, {teacher_digest[:12]}… now); resume with the run's own teacher "
            f"or start afresh with another --out"
        )
    resumed, changed = config.resumed_config(meta["distill"]["config"], meta.get("resumes", []))
    check_resume_steps(resumed.max_steps, int(meta.get("step", 0)), config.out)
    if "steps_per_round" in changed and changed["steps_per_round"][1] < changed["steps_per_round"][0]:
        raise ValueError(f"steps_per_round may only grow on a resume: out={config.out!r} has "
                         f"{changed['steps_per_round'][0]} a round, now {changed['steps_per_round'][1]}")
    return tensors, meta, resumed, changed


def _models(config: DistillConfig, model_config: DenoiserConfig, teacher_tensors: dict[str, Tensor], device: torch.device,
            schedule: Schedule, source: DataSource) -> tuple[Trainee, torch.nn.Module]:
    """The student (initialised from the teacher's EMA weights, built by its method's record) as a Trainee, and the
    frozen teacher copy (the source's ExactTeacher when config.exact_teacher)."""
    weights = {**ckpt.subset(teacher_tensors, "model"), **ckpt.subset(teacher_tensors, "ema")}
    student, frozen = distill_method(config.method).build_models(config, model_config, weights, schedule)
    student.to(device).train()
    if config.exact_teacher:
        frozen = ExactTeacher(source, model_config.mask_id).eval()
    else:
        frozen = frozen.to(device).eval()
        frozen.requires_grad_(False)
        frozen.load_state_dict(student.state_dict())
    ema = EMA(student, config.ema_decay)
    optimizer = build_optimizer(student, lr=config.lr, weight_decay=config.weight_decay)
    return Trainee(student, maybe_compile(wrap_ddp(student, device), config.compile), optimizer, ema), frozen


def distill(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume, or return the finished) distillation; returns a summary (optimizer_steps,
    teacher_forward_passes, teacher_sequence_evals, wall_time_s, complete, round_steps, step, interrupted:
    a stop signal ended it, after saving; see sampler.train.loop).

    Each round r (dt_r = 1/N_r, N_r = N0/2^r): the frozen teacher is refreshed from the student
    (or its EMA); then `steps_per_round` AdamW steps on the MCD loss (or the baseline's).
    Checkpoints hold student, EMA, frozen teacher and optimiser state, so a run resumes
    exactly mid-round.  Every bad input raises before any training step.  The run records the digest
    of the teacher's weights and refuses to resume from other ones; the run directory is locked for
    the whole run (sampler.rundir.run_dir_lock, rank 0 only).
    """
    counts = config.validate()
    check_output_path(config.out, kind="dir", name="--out")
    device = pick_device(config.device)
    check_compile_device(config.compile, device)
    owner = int(os.environ.get("RANK", "0")) == 0
    with run_dir_lock(config.out) if owner else contextlib.nullcontext():
        return _distill_owned(config, counts, device)


def _distill_owned(config: DistillConfig, counts: list, device: torch.device) -> dict[str, Any]:
    """distill() once the run directory is this process's."""
    total_steps = len(counts) * config.steps_per_round
    teacher_tensors, teacher_meta, source, model_config, schedule = _load_teacher(config)
    if config.exact_teacher:
        ExactTeacher(source, model_config.mask_id)  # ValueError naming --exact-teacher before any other work
    teacher_digest = teacher_weights_digest(teacher_tensors)
    resume_tensors, resume_meta, config, changed = _previous_run(config, model_config, teacher_digest)
    if resume_tensors is not None and int(resume_meta["step"]) == total_steps:
        done = resume_meta["distill"]
        return {**{k: done[k] for k in ("teacher_forward_passes", "teacher_sequence_evals", "wall_time_s", "optimizer_steps")},
                "complete": True, "round_steps": done["round_steps"], "step": int(resume_meta["step"]), "interrupted": False}
    seq_len = int(teacher_meta.get("seq_len", model_config.seq_len))
    check_training_memory(model_config, config.batch_size, seq_len, device)
    rank, world, _ = ddp_setup()
    if device.type == "cpu" and config.threads is not None:
        torch.set_num_threads(config.threads)
    method = distill_method(config.method)
    trainee, frozen = _models(config, model_config, teacher_tensors, device, schedule, source)
    coupling = MaskedCoupling(schedule, vocab_size=model_config.vocab_size, mask_id=model_config.mask_id, method=config.coupling)
    ctx = DistillContext(trainee, frozen, source, coupling, schedule, config, counts, seq_len, model_config.mask_id, rank, world, device)
    step, provenance, resumes = 0, config.to_dict(), []
    if resume_tensors is not None:
        trainee.load_state_tensors(resume_tensors, resume_meta["distill"]["optimizer"])
        frozen.load_state_dict(ckpt.subset(resume_tensors, "teacher"), strict=True)
        step = int(resume_meta["step"])
        ctx.record.update({k: resume_meta["distill"][k] for k in ctx.record})
        provenance, resumes = resume_meta["distill"]["config"], [*resume_meta.get("resumes", []), {"step": step, "changed": changed}]
    logger = MetricsLogger(Path(config.out) / "metrics.jsonl" if is_main_process() else None)
    if is_main_process():
        truncate_metrics(Path(config.out) / "metrics.jsonl", step)
        print(f"{distill_settings_line(config, counts)}, from step {step}; note: {LOSS_ACROSS_ROUNDS_NOTE}", file=sys.stderr)
    started = time.perf_counter() - ctx.record["wall_time_s"]

    def tick() -> None:
        ctx.record["wall_time_s"] = time.perf_counter() - started

    def save(at_step: int) -> None:
        tick()
        ctx.record["optimizer_steps"] = at_step
        if not is_main_process():
            return
        tensors, opt_meta = trainee.state_tensors()
        meta = {
            **method.checkpoint_meta(trainee.model, config),
            "kind": RUN_KIND, "model_config": model_config.to_dict(), "source": teacher_meta["source"],
            "tokenizer": teacher_meta.get("tokenizer"),
            "schedule": teacher_meta["schedule"], "seq_len": seq_len, "mask_id": model_config.mask_id, "step": at_step,
            "resumes": resumes,
            "distill": {
                **ctx.record, "config": provenance, "teacher_digest": teacher_digest, "round_steps": counts,
                "round": min(at_step // config.steps_per_round, len(counts) - 1), "total_steps": total_steps,
                "complete": at_step >= total_steps,
                "teacher_meta": {k: teacher_meta.get(k) for k in ("step", "source", "schedule")},
                "optimizer": opt_meta, "world_size": world,
            },
        }
        ckpt.save_checkpoint(config.out, {**tensors, **ckpt.prefixed("teacher", frozen.state_dict())}, meta)

    def log_fields(_: int) -> dict[str, Any]:
        tick()
        return {"round": ctx.round_index, "dt": ctx.dt, "temperature": ctx.temperature,
                "teacher_forward_passes": ctx.record["teacher_forward_passes"], "wall_time_s": ctx.record["wall_time_s"]}

    hooks = LoopHooks(save=save, before_step=rounds_hook(ctx, logger), log_fields=log_fields)
    stop = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    result = run_loop(trainee, method.step(ctx), hooks, config, config, logger, start=step, stop=stop,
                      desc=f"distill[{config.method}]", tokens_per_step=config.batch_size * seq_len * world)
    return {**ctx.record, "complete": result.step >= total_steps, "round_steps": counts, "step": result.step,
            "interrupted": result.interrupted}


__all__ = [
    "DistillConfig", "distill", "ExactTeacher", "mcd_step", "rounds_hook", "DistillContext", "round_step_counts", "teacher_temperature",
    "steps_from_dt", "step_generator", "check_teacher_compatible", "teacher_weights_digest", "check_dt", "check_step_count", "METHODS", "COUPLINGS",
    "REFRESH_FROM", "RUN_KIND", "distill_method",
]
