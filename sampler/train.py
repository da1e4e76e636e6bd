"""`mcd train`: train a masked diffusion teacher with the MDLM continuous-time ELBO.

    loss = E_t [ w(t) · (1/L) Σ_{masked l} −log p_θ(x0_l | z_t) ],   w(t) = −α′(t)/(1 − α(t))

(sampler.batches), AdamW with linear warmup, gradient clipping, EMA weights, JSONL metrics
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

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from .batches import elbo_loss, teacher_batch
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    make_schedule,
    prefixed,
    save_checkpoint,
    subset,
)
from .model import Denoiser, DenoiserConfig
from .training import (
    EMA,
    MetricsLogger,
    autocast,
    build_optimizer,
    capture_rng_state,
    ddp_cleanup,
    ddp_setup,
    is_main_process,
    maybe_compile,
    optimizer_from_tensors,
    optimizer_to_tensors,
    pick_device,
    restore_rng_state,
    set_lr,
    warmup_lr,
    wrap_ddp,
)

DEFAULT_MINUTES = 10.0


@dataclass
class TrainConfig:
    """Everything a teacher run depends on (stored in the checkpoint's meta["train_config"])."""

    out: str
    data: str = "exact"
    data_seed: int = 0
    seq_len: int | None = None  # None: the source's default
    size: str = "tiny"
    time_conditioning: bool = False
    dropout: float = 0.0
    schedule: str = "loglinear"
    steps: int | None = None  # total optimizer steps (a resumed run continues up to it)
    minutes: float | None = None  # wall-clock budget of this invocation
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    threads: int | None = 1  # CPU torch threads; None leaves torch's default
    log_every: int = 25
    save_every: int = 500
    eval_every: int = 500
    eval_batches: int = 4
    progress: bool = True
    resume: bool = False

    def validate(self) -> None:
        for name in ("batch_size", "warmup", "log_every", "save_every", "eval_every", "eval_batches", "data_seed", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name in ("warmup", "data_seed", "seed") else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name in ('warmup', 'data_seed', 'seed') else 'positive'} int, got {value!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"minutes must be a positive number, got {self.minutes!r}")
        if self.seq_len is not None and (isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len < 1):
            raise ValueError(f"seq_len must be a positive int, got {self.seq_len!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be a positive int, got {self.threads!r}")


class TrainingStopped(Exception):
    """Raised by a step callback to stop a run (tests use it to simulate a kill)."""


def _resolve_source(cfg: TrainConfig, source: Any | None) -> Any:
    if source is not None:
        return source
    from .data import get_source

    return get_source(cfg.data, seed=cfg.data_seed, seq_len=cfg.seq_len)


def train(cfg: TrainConfig, source: Any | None = None, step_callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a teacher into cfg.out; returns a summary dict (steps, losses, throughput).

    `source` overrides cfg.data (any object with vocab_size, default_seq_len, sample_batch,
    describe); `step_callback(step)` runs after each completed step.
    """
    cfg.validate()
    run_dir = Path(cfg.out)
    if checkpoint_path(run_dir).exists() and not cfg.resume:
        raise ValueError(f"out={str(run_dir)!r} already holds a checkpoint; pass --resume to continue it or choose another --out")
    if cfg.resume and not checkpoint_path(run_dir).exists():
        raise CheckpointError(f"--resume: no checkpoint at {str(checkpoint_path(run_dir))!r}")
    if cfg.steps is None and cfg.minutes is None:
        cfg.minutes = DEFAULT_MINUTES

    rank, world, _ = ddp_setup()
    device = pick_device(cfg.device)
    if device.type == "cpu" and cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)

    source = _resolve_source(cfg, source)
    seq_len = cfg.seq_len or int(source.default_seq_len)
    schedule = make_schedule(cfg.schedule)
    model_config = DenoiserConfig.preset(
        cfg.size, int(source.vocab_size), seq_len, time_conditioning=cfg.time_conditioning, dropout=cfg.dropout
    )
    mask_id = model_config.mask_id

    # data and masking generators live on the CPU: the same stream on any device
    data_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2 * rank + 1)
    mask_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2 * rank + 2)
    generators = {"data": data_gen, "mask": mask_gen}

    model = Denoiser(model_config).to(device)
    ema = EMA(model, cfg.ema)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume:
        step = _restore(run_dir, model, ema, optimizer, generators, model_config, source, device)
        if world > 1:  # the checkpoint holds rank 0's streams; give every rank its own again
            for i, gen in enumerate((data_gen, mask_gen)):
                gen.manual_seed(cfg.seed * 1_000_003 + 2 * rank + 1 + i + 7_919 * step)
    meta_base = {
        "kind": "teacher",
        "model_config": model_config.to_dict(),
        "source": source.describe(),
        "schedule": schedule.describe(),
        "mask_id": mask_id,
        "train_config": asdict(cfg),
    }
    train_model = maybe_compile(wrap_ddp(model, device), cfg.compile and device.type == "cuda")
    logger = MetricsLogger(run_dir / "metrics.jsonl" if is_main_process() else None)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"teacher: {model.num_parameters():,} parameters ({cfg.size}), source {getattr(source, 'name', '?')} "
            f"K={model_config.vocab_size} L={seq_len}, device {device}, world {world}, from step {step}",
            file=sys.stderr,
        )

    def save(at_step: int) -> None:
        if not is_main_process():
            return
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        tensors = {
            **prefixed("model", model.state_dict()),
            **prefixed("ema", ema.state_dict()),
            **prefixed("optim", opt_tensors),
            **prefixed("rng", capture_rng_state(generators)),
        }
        save_checkpoint(run_dir, tensors, {**meta_base, "step": at_step, "optimizer": opt_meta})

    eval_x0 = _eval_batches(source, cfg, seq_len)
    start_time = time.perf_counter()
    deadline = start_time + 60.0 * cfg.minutes if cfg.minutes is not None else math.inf
    target = cfg.steps if cfg.steps is not None else None
    bar = None
    if cfg.progress and is_main_process():
        from tqdm.auto import tqdm

        bar = tqdm(total=target, initial=step, desc="train", unit="step", dynamic_ncols=True)
    tokens_per_step = cfg.batch_size * seq_len * world
    losses: list[float] = []
    last_log_time, last_log_step, last_saved = time.perf_counter(), step, step
    summary: dict[str, Any] = {}
    model.train()
    try:
        while (target is None or step < target) and time.perf_counter() < deadline:
            lr = warmup_lr(step, cfg.warmup, cfg.lr)
            set_lr(optimizer, lr)
            x0 = source.sample_batch(cfg.batch_size, seq_len, data_gen).to(device)
            z_t, t = teacher_batch(x0, schedule, mask_id, mask_gen)
            with autocast(device):
                log_probs = train_model(z_t, t)
            loss = elbo_loss(log_probs, x0, z_t, t, schedule, mask_id)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            ema.update(model, step)
            step += 1
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0:
                now = time.perf_counter()
                rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
                recent = losses[-cfg.log_every :]
                record = {
                    "step": step, "loss": sum(recent) / len(recent), "lr": lr, "grad_norm": float(grad_norm),
                    "steps_per_s": rate, "tokens_per_s": rate * tokens_per_step,
                }
                logger.log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", sps=f"{rate:.1f}")
                last_log_time, last_log_step = now, step
            if step % cfg.eval_every == 0 and is_main_process():
                logger.log({"step": step, "eval_elbo": evaluate_elbo(model, ema, eval_x0, schedule, mask_id, device)})
            if step % cfg.save_every == 0:
                save(step)
                last_saved = step
            if step_callback is not None:
                step_callback(step)
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {step}; saving a checkpoint", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start_time
    if step != last_saved or not checkpoint_path(run_dir).exists():
        save(step)
    eval_elbo = evaluate_elbo(model, ema, eval_x0, schedule, mask_id, device) if is_main_process() else float("nan")
    steps_run = len(losses)
    summary = {
        "step": step,
        "steps_this_run": steps_run,
        "seconds": elapsed,
        "steps_per_s": steps_run / max(elapsed, 1e-9),
        "tokens_per_s": steps_run * tokens_per_step / max(elapsed, 1e-9),
        "final_loss": sum(losses[-cfg.log_every :]) / max(1, len(losses[-cfg.log_every :])) if losses else float("nan"),
        "eval_elbo": eval_elbo,
        "run_dir": str(run_dir),
        "rank": rank,
        "world_size": world,
    }
    logger.log({"event": "end", **summary})
    ddp_cleanup()
    return summary


def _eval_batches(source: Any, cfg: TrainConfig, seq_len: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(10_007 + cfg.seed)  # fixed held-out data, separate from training draws
    return source.sample_batch(cfg.eval_batches * cfg.batch_size, seq_len, gen)


@torch.no_grad()
def evaluate_elbo(
    model: torch.nn.Module, ema: EMA | None, x0: torch.Tensor, schedule: Any, mask_id: int,
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _restore(
    run_dir: Path, model: Denoiser, ema: EMA, optimizer: torch.optim.Optimizer, generators: dict[str, torch.Generator],
    model_config: DenoiserConfig, source: Any, device: torch.device,
) -> int:
    """Load a checkpoint into the live objects (validating compatibility first); returns its step."""
    tensors, meta = load_checkpoint(run_dir)
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
        model.load_state_dict(subset(tensors, "model"))
        ema.load_state_dict({k: v.to(device) for k, v in subset(tensors, "ema").items()})
        optimizer_from_tensors(optimizer, subset(tensors, "optim"), meta["optimizer"])
        restore_rng_state(subset(tensors, "rng"), generators)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"checkpoint in {str(run_dir)!r} is incomplete: {err}") from err
    return int(meta["step"])


# --- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="exact", help="data source (sampler.data.get_source): 'exact' (embedded exact-likelihood "
                        "source), 'ngram:CORPUS' (exact n-gram chain fitted on CORPUS), 'text:CORPUS' or 'CORPUS' "
                        "(CORPUS: 'shakespeare' or a local text file/dir)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed that builds the data source")
    parser.add_argument("--out", required=True, help="run directory (checkpoint.safetensors, config.json, metrics.jsonl)")
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (a resumed run continues up to it)")
    parser.add_argument("--minutes", type=float, default=None, help=f"wall-clock budget (default {DEFAULT_MINUTES:g} when --steps is absent)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--size", default="tiny", choices=["tiny", "mini", "small"], help="model size preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly where it stopped")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the source's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay")
    parser.add_argument("--schedule", default="loglinear", choices=["loglinear", "cosine", "polynomial"])
    parser.add_argument("--time-conditioning", action="store_true", help="condition the denoiser on t (disables the cached sampler)")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (default 1)")
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        out=args.out, data=args.data, data_seed=args.data_seed, seq_len=args.seq_len, size=args.size, time_conditioning=args.time_conditioning,
        dropout=args.dropout, schedule=args.schedule, steps=args.steps, minutes=args.minutes,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, ema=args.ema, seed=args.seed, device=args.device, compile=args.compile,
        threads=args.threads, log_every=args.log_every, save_every=args.save_every, eval_every=args.eval_every,
        progress=not args.no_progress, resume=args.resume,
    )


def run(args: argparse.Namespace) -> int:
    try:
        summary = train(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"mcd train: error: {err}", file=sys.stderr)
        return 2
    if summary["rank"] == 0:
        print(json.dumps(summary, indent=2))
    return 0
