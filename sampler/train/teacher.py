"""The teacher: its ELBO step function on the shared loop (sampler.train.loop) and `train(config)` with the MDLM continuous-time ELBO.

    loss = E_t [ w(t) · (1/L) Σ_{masked l} −log p_θ(x0_l | z_t) ],   w(t) = −α′(t)/(1 − α(t))

(sampler.losses, sampler.batches), AdamW with linear warmup, gradient clipping, EMA weights, JSONL metrics
(RUN/metrics.jsonl), tqdm progress, atomic safetensors checkpoints (sampler.checkpoint).

Exact resume: a checkpoint holds the weights, the EMA, the AdamW state, the step, every
RNG state and the data generator's state, so on the CPU a run stopped and resumed with
--resume ends with bitwise the same weights as one run straight through.

CUDA: bf16 autocast, optional torch.compile; several GPUs with
`torchrun --nproc_per_node=G -m sampler.cli train ...` (DistributedDataParallel; each rank
draws its own data; rank 0 writes; a multi-process resume is exact in the weights and
optimizer, but reseeds the data streams of the ranks).  On the CPU one torch thread is the default (two were
slower than one on a shared 2-core machine).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import replace
from typing import Any

import torch

from ..batches import teacher_batch
from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint, make_schedule, save_checkpoint
from ..data import DataSource, get_source
from ..data.text import tokenizer_state
from ..losses import elbo_loss
from ..autoregressive import next_token_loss, nll_per_sequence
from ..model import DenoiserConfig, TransformerDenoiser
from ..protocols import Schedule
from ..rundir import check_output_path, run_dir_lock
from .config import DEFAULT_MINUTES, TrainConfig, check_resume, check_resume_steps, train_settings_line
from .loop import LoopHooks, StepFn, StepOutput, run_loop
from ..device import autocast, pick_device
from .runtime import (
    EMA,
    MetricsLogger,
    Trainee,
    build_optimizer,
    check_compile_device,
    check_training_memory,
    ddp_cleanup,
    ddp_setup,
    is_main_process,
    maybe_compile,
    truncate_metrics,
    wrap_ddp,
)

USEFUL_STEPS = 1_000  # fewer optimiser steps than this in the budget: warn before starting (see budget_warning)


def seconds_per_step(model: TransformerDenoiser, batch_size: int, seq_len: int, device: torch.device, repeats: int = 3) -> float:
    """Median wall time of a forward and backward pass of a copy of `model` on a random batch of the run's
    shape (after one warm-up pass): the run's own weights, generators and RNG streams are untouched."""
    probe = copy.deepcopy(model).eval()  # eval: no dropout draws
    z = torch.randint(0, probe.mask_id + 1, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.rand(batch_size, generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    with torch.random.fork_rng(devices=[]):
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with autocast(device):
                probe(z, t).float().mean().backward()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def budget_warning(step_seconds: float, minutes: float | None, max_steps: float, size: str, device: torch.device) -> str | None:
    """A warning when the run cannot make meaningful progress: fewer than USEFUL_STEPS optimiser steps fit in
    its wall-clock budget (or its --max-steps would take longer than the budget allows, the budget binding)."""
    if minutes is None:
        return None
    in_budget = min(60.0 * minutes / step_seconds, max_steps)
    if in_budget >= USEFUL_STEPS:
        return None
    return (f"warning: --size {size} takes about {step_seconds:.2f} s per step on {device}, so the {minutes:g}-minute budget "
            f"gives about {int(in_budget):,} optimiser steps (fewer than {USEFUL_STEPS:,}: too few for meaningful progress); "
            f"choose a smaller --size, a shorter --seq-len or --batch-size, more --minutes, or a GPU")


def _print_budget_warning(model: TransformerDenoiser, cfg: TrainConfig, seq_len: int, minutes: float | None,
                          device: torch.device) -> None:
    """Print budget_warning's message (if any) for this run, its step time measured on a copy of the model."""
    warning = budget_warning(seconds_per_step(model, cfg.batch_size, seq_len, device), minutes,
                             cfg.max_steps if cfg.max_steps is not None else math.inf, cfg.size, device)
    if warning:
        print(warning, file=sys.stderr)


class TrainingStopped(Exception):
    """Raised by a step callback to stop a run (tests use it to simulate a kill)."""


def teacher_step(
    trainee: Trainee, source: DataSource, schedule: Schedule, mask_id: int, batch_size: int, seq_len: int,
    generators: dict[str, torch.Generator], device: torch.device,
) -> StepFn:
    """The teacher's step function: x0 from the data stream, (z_t, t) = teacher_batch(x0) from the
    masking stream, loss = the MDLM ELBO of the model's log p(x0 | z_t)."""

    def step(_: int) -> StepOutput:
        x0 = source.sample_batch(batch_size, seq_len, generators["data"]).to(device)
        z_t, t = teacher_batch(x0, schedule, mask_id, generators["mask"])
        with autocast(device):
            log_probs = trainee.forward(z_t, t)
        return StepOutput(elbo_loss(log_probs, x0, z_t, t, schedule, mask_id))

    return step


def ar_step(
    trainee: Trainee, source: DataSource, mask_id: int, batch_size: int, seq_len: int,
    generators: dict[str, torch.Generator], device: torch.device,
) -> StepFn:
    """The autoregressive reference's step function: x0 from the same data stream, loss = the mean
    next-token cross-entropy of the causal model (sampler.autoregressive.next_token_loss)."""

    def step(_: int) -> StepOutput:
        x0 = source.sample_batch(batch_size, seq_len, generators["data"]).to(device)
        with autocast(device):
            return StepOutput(next_token_loss(trainee.forward, mask_id, x0))

    return step


def _stream_generators(seed: int, rank: int) -> dict[str, torch.Generator]:
    """The data and masking generators of a rank, on the CPU (the same streams on any device)."""
    return {name: torch.Generator().manual_seed(seed * 1_000_003 + 2 * rank + 1 + i) for i, name in enumerate(("data", "mask"))}


def _model_config(cfg: TrainConfig, source: DataSource, seq_len: int) -> DenoiserConfig:
    return DenoiserConfig.preset(cfg.size, int(source.vocab_size), seq_len, time_conditioning=cfg.time_conditioning,
                                 dropout=cfg.dropout, causal=cfg.objective == "ar")


def _build(cfg: TrainConfig, source: DataSource, rank: int, device: torch.device) -> tuple[Trainee, DenoiserConfig, Schedule, int]:
    seq_len = cfg.seq_len or int(source.default_seq_len)
    schedule = make_schedule(cfg.schedule)
    model_config = _model_config(cfg, source, seq_len)
    model = TransformerDenoiser(model_config).to(device)
    ema = EMA(model, cfg.ema_decay)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    forward = maybe_compile(wrap_ddp(model, device), cfg.compile and device.type == "cuda")
    return Trainee(model, forward, optimizer, ema, ema_warmup=True), model_config, schedule, seq_len


def _check_run_dir(cfg: TrainConfig) -> None:
    run_dir = check_output_path(cfg.out, kind="dir", name="--out")
    check_resume(cfg.out, checkpoint_path(run_dir).exists(), cfg.resume)


def train(cfg: TrainConfig, source: DataSource | None = None, step_callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a teacher into cfg.out; returns a summary dict (steps, losses, throughput).

    `source` overrides cfg.data (any object with vocab_size, default_seq_len, sample_batch,
    describe); `step_callback(step)` runs after each completed step (after its checkpoint).
    Bad input (config, output path, --compile off CUDA) fails before the run directory is touched;
    the run directory is locked for the whole run (sampler.rundir.run_dir_lock, rank 0 only).
    """
    cfg.validate()
    _check_run_dir(cfg)
    check_compile_device(cfg.compile, pick_device(cfg.device))
    owner = int(os.environ.get("RANK", "0")) == 0
    with run_dir_lock(cfg.out) if owner else contextlib.nullcontext():
        return _train_owned(cfg, source, step_callback)


def _train_owned(cfg: TrainConfig, source: DataSource | None, step_callback: Callable[[int], None] | None) -> dict[str, Any]:
    """train() once the run directory is this process's: resume checks, then the loop."""
    run_dir = Path(cfg.out)
    resume_tensors, resume_meta = load_checkpoint(run_dir) if cfg.resume else (None, {})
    provenance, resumes, changed = cfg.to_dict(), [], {}
    if cfg.resume:
        provenance, resumes = _stored_train_config(resume_meta, run_dir), list(resume_meta.get("resumes", []))
        cfg, changed = cfg.resumed_config(provenance, resumes)
        check_resume_steps(cfg.max_steps, int(resume_meta.get("step", 0)), cfg.out)
    elif cfg.seed is None:
        cfg = replace(cfg, seed=0)
        provenance = cfg.to_dict()
    minutes = cfg.minutes if (cfg.minutes is not None or cfg.max_steps is not None) else DEFAULT_MINUTES
    device = pick_device(cfg.device)
    source = source if source is not None else get_source(cfg.data, seed=cfg.data_seed, seq_len=cfg.seq_len)
    seq_len = cfg.seq_len or int(source.default_seq_len)
    check_training_memory(_model_config(cfg, source, seq_len), cfg.batch_size, seq_len, device)
    rank, world, _ = ddp_setup()
    if device.type == "cpu" and cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    trainee, model_config, schedule, seq_len = _build(cfg, source, rank, device)
    mask_id = model_config.mask_id
    generators = _stream_generators(cfg.seed, rank)
    step = 0
    if resume_tensors is not None:
        step = _restore(run_dir, resume_tensors, resume_meta, trainee, generators, model_config, source)
        resumes.append({"step": step, "changed": changed})
        if world > 1:  # the checkpoint holds rank 0's streams; give every rank its own again
            for i, gen in enumerate(generators.values()):
                gen.manual_seed(cfg.seed * 1_000_003 + 2 * rank + 1 + i + 7_919 * step)
    meta_base = {"kind": "ar" if cfg.objective == "ar" else "teacher", "model_config": model_config.to_dict(), "source": source.describe(),
                 "tokenizer": tokenizer_state(source),  # decoding without the corpus (sample, eval)
                 "schedule": schedule.describe(), "mask_id": mask_id, "train_config": provenance, "resumes": resumes}
    logger = MetricsLogger(run_dir / "metrics.jsonl" if is_main_process() else None)
    if is_main_process():
        truncate_metrics(run_dir / "metrics.jsonl", step)
        print(f"{'autoregressive reference' if cfg.objective == 'ar' else 'teacher'}: {trainee.model.num_parameters():,} parameters ({cfg.size}), source {getattr(source, 'name', '?')} "
              f"K={model_config.vocab_size} L={seq_len}, device {device}, world {world}, from step {step}; "
              f"{train_settings_line(cfg, minutes)}", file=sys.stderr)

    def save(at_step: int) -> None:
        if is_main_process():
            tensors, opt_meta = trainee.state_tensors(generators)
            save_checkpoint(run_dir, tensors, {**meta_base, "step": at_step, "optimizer": opt_meta})

    eval_x0 = _eval_batches(source, cfg, seq_len)
    if is_main_process() and cfg.progress:
        _print_budget_warning(trainee.model, cfg, seq_len, minutes, device)

    def heldout_loss(_: int | None = None) -> float:
        """The EMA weights' held-out ELBO (mdlm) or exact next-token NLL (ar), nats/token."""
        if cfg.objective == "ar":
            return evaluate_ar_nll(trainee.model, trainee.ema, eval_x0, device)
        return evaluate_elbo(trainee.model, trainee.ema, eval_x0, schedule, mask_id, device)

    def after_step(at_step: int) -> None:
        if at_step % cfg.eval_every == 0 and is_main_process():
            logger.log({"step": at_step, "eval_elbo": heldout_loss(at_step)})
        if step_callback is not None:
            step_callback(at_step)

    step_fn = (ar_step(trainee, source, mask_id, cfg.batch_size, seq_len, generators, device) if cfg.objective == "ar"
               else teacher_step(trainee, source, schedule, mask_id, cfg.batch_size, seq_len, generators, device))
    tokens_per_step = cfg.batch_size * seq_len * world
    result = run_loop(trainee, step_fn, LoopHooks(save=save, after_step=after_step), cfg, cfg, logger, start=step,
                      stop=cfg.max_steps if cfg.max_steps is not None else math.inf,
                      deadline_s=60.0 * minutes if minutes is not None else None, desc="train", tokens_per_step=tokens_per_step)
    eval_elbo = heldout_loss() if is_main_process() else float("nan")
    steps_run, recent = len(result.losses), result.losses[-cfg.log_every:]
    summary = {
        "step": result.step, "steps_this_run": steps_run, "seconds": result.seconds,
        "steps_per_s": steps_run / max(result.seconds, 1e-9), "tokens_per_s": steps_run * tokens_per_step / max(result.seconds, 1e-9),
        "final_loss": sum(recent) / len(recent) if recent else float("nan"), "eval_elbo": eval_elbo,
        "run_dir": str(run_dir), "rank": rank, "world_size": world, "interrupted": result.interrupted,
    }
    logger.log({"event": "end", **summary})
    ddp_cleanup()
    return summary


def _stored_train_config(meta: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The train_config a run was started with (its provenance); ValueError when the run has none that a teacher run has."""
    stored = meta.get("train_config")
    if not isinstance(stored, dict):
        raise ValueError(f"out={str(run_dir)!r} holds a checkpoint without a train_config (not a teacher run?)")
    TrainConfig.from_dict(stored)  # ValueError when it is not a teacher run's config
    return stored


def _eval_batches(source: DataSource, cfg: TrainConfig, seq_len: int) -> torch.Tensor:
    """Fixed held-out data, drawn apart from the training draws: the corpus's validation split where the
    source has one (text), else fresh draws of the exact source under their own seed."""
    gen = torch.Generator().manual_seed(10_007 + cfg.seed)
    splits = getattr(source, "splits", None)
    if isinstance(splits, dict) and "valid" in splits:
        return source.sample_batch(cfg.eval_batches * cfg.batch_size, seq_len, gen, split="valid")
    return source.sample_batch(cfg.eval_batches * cfg.batch_size, seq_len, gen)


@torch.no_grad()
def evaluate_elbo(
    model: torch.nn.Module, ema: EMA | None, x0: torch.Tensor, schedule: Schedule, mask_id: int,
    device: torch.device, batch_size: int = 256, seed: int = 0,
) -> float:
    """The ELBO (nats/token, an upper bound on −log p(x0)/L) of the EMA weights on held-out x0,
    with fixed masking noise; the model's training weights and RNG state are untouched."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    ctx = ema.swapped_in(model) if ema is not None else _null()
    with ctx:
        for start in range(0, x0.shape[0], batch_size):
            xb = x0[start : start + batch_size].to(device)
            z_t, t = teacher_batch(xb, schedule, mask_id, gen)
            with autocast(device):
                log_probs = model(z_t, t)
            total += elbo_loss(log_probs, xb, z_t, t, schedule, mask_id).item() * xb.shape[0]
            count += xb.shape[0]
    model.train(was_training)
    return total / count


@torch.no_grad()
def evaluate_ar_nll(model: TransformerDenoiser, ema: EMA | None, x0: torch.Tensor, device: torch.device) -> float:
    """The exact held-out NLL (nats/token) of the EMA weights of a causal model; training weights and mode untouched."""
    was_training = model.training
    model.eval()
    with ema.swapped_in(model) if ema is not None else _null():
        value = float(nll_per_sequence(model, x0.to(device)).mean())
    model.train(was_training)
    return value


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _restore(
    run_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], trainee: Trainee,
    generators: dict[str, torch.Generator], model_config: DenoiserConfig, source: DataSource,
) -> int:
    """Load a checkpoint's (tensors, meta) into the live objects (validating compatibility first); returns its step.
    A checkpoint written before issue 9 (train_config with `ema`, `steps`) loads the same way."""
    saved = meta.get("model_config", {})
    if saved.get("vocab_size") != model_config.vocab_size:
        raise ValueError(
            f"vocabulary mismatch: the data source has vocab_size={model_config.vocab_size}, "
            f"the checkpoint in {str(run_dir)!r} was trained with vocab_size={saved.get('vocab_size')}"
        )
    if saved != model_config.to_dict():
        raise ValueError(f"--resume with a different model: checkpoint {saved}, now {model_config.to_dict()}")
    if meta.get("source") != source.describe():
        raise ValueError(f"--resume with a different data source: checkpoint {meta.get('source')}, now {source.describe()}")
    try:
        trainee.load_state_tensors(tensors, meta["optimizer"], generators)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} is incomplete: {err}") from err
    return int(meta["step"])


__all__ = ["TrainConfig", "TrainingStopped", "train", "teacher_step", "ar_step", "evaluate_elbo", "evaluate_ar_nll",
           "DEFAULT_MINUTES"]
