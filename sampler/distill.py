"""Masked consistency distillation (MCD) and `mcd distill`.

MCD trains a few-step student from a masked-diffusion teacher.  The coupled pair of noisy
sequences that consistency distillation needs comes from one coupling noise per token
(duality.MaskedCoupling): each token has one unmasking time τ, and

    z_t = x0 where t < τ else m,        z_s = x0 where s < τ else m,        s = t − dt,

so z_s reveals a superset of z_t, always with the true tokens; no ODE solver, no teacher
rollout.  The loss on a position masked in z_t is

    −log p_student(x0 | z_t, t)                          where z_s has revealed x0,
    D(p_student(· | z_t, t), p_teacher^{1/T}(· | z_s, s)) where z_s still masks it,

averaged over the positions masked in z_t; D is reverse KL by default (forward KL, JS
selectable) and T the teacher temperature of the round, T_r = max(0.75, 0.96 − 0.03·r).

Rounds r = 0, 1, ...: dt_r = 2^r / N0 doubles until 1/target_steps; at the start of each the
frozen teacher is refreshed from the student's EMA (or the student); the student starts as
the teacher.  The stochastic baseline (sampler.baseline) runs in the same loop with targets
from the teacher's own two-half-step rollout.  One teacher forward pass per MCD step, two
per baseline step; both are counted.

`mcd distill --teacher RUN --out RUN2`: AdamW + warmup, grad clipping, EMA, bf16 autocast on
CUDA, DDP under torchrun, safetensors checkpoints holding student, EMA, frozen teacher and
optimiser state (exact resume mid-round: the batch of step k depends only on (seed, rank, k)),
JSONL metrics in RUN2/metrics.jsonl, tqdm progress.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "js")

# A denoiser is any callable (z: Int[B, L], t: Float[B]) -> log-probs Float[B, L, K].
Denoiser = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------
# schedules of the rounds


def check_step_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_dt(dt: Any, name: str = "dt") -> float:
    """dt must be a real number in (0, 1]."""
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not math.isfinite(float(dt)):
        raise ValueError(f"{name} must be a real number in (0, 1], got {dt!r}")
    if not 0.0 < float(dt) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {dt!r}")
    return float(dt)


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
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not math.isfinite(step):
        raise ValueError(f"temperature_step must be finite, got {step!r}")
    return max(floor, start + step * round_index)


# ---------------------------------------------------------------------------
# the coupled batch


def distillation_batch(
    x0: Int[Tensor, "B *rest"],
    coupling: Any,
    t: Float[Tensor, "B"] | float,
    dt: float | int,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Int[Tensor, "B *rest"], Int[Tensor, "B *rest"], Float[Tensor, "B"]]:
    """(z_t, z_s, s): the two masked states of one coupled path, s = max(t − dt, 0).

    The coupling noise (one per token, `coupling.sample_noise`) is drawn once and used at
    both times, so visible(t) ⊆ visible(s) and every visible token is the true x0 token.
    t is one time per sequence (a float is used for every sequence).
    """
    dt = check_dt(dt)
    if not isinstance(t, Tensor):
        t = torch.full((x0.shape[0],), float(t), dtype=torch.float64, device=x0.device)
    if t.dim() != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    if t.is_floating_point() and t.numel() and (bool(torch.isnan(t).any()) or float(t.min()) < 0 or float(t.max()) > 1):
        raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]")
    if noise is None:
        noise = coupling.sample_noise(x0, generator=generator)
    s = (t - dt).clamp(min=0.0)
    z_s, z_t = coupling.pair(x0, noise, s, t)
    return z_t, z_s, s


def stratified_times(batch_size: int, low: float, generator: torch.Generator | None = None) -> Float[Tensor, "B"]:
    """t_b = low + (1 − low)·((u + b/B) mod 1), u ~ U(0,1): one uniform, stratified over the batch (float64)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    grid = (u + torch.arange(batch_size, dtype=torch.float64) / batch_size) % 1.0
    return low + (1.0 - low) * grid


# ---------------------------------------------------------------------------
# losses


def temper(log_probs: Float[Tensor, "*b K"], temperature: float) -> Float[Tensor, "*b K"]:
    """log softmax(log p / T): p^{1/T} renormalised (T < 1 sharpens).  T = 1 returns log p unchanged."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if temperature == 1.0:
        return log_probs
    return torch.log_softmax(log_probs / temperature, dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Σ_k p_k (log p_k − log q_k), with 0·log 0 = 0 (no NaN from −inf entries of p)."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def divergence(
    student_log_probs: Float[Tensor, "N K"], target_log_probs: Float[Tensor, "N K"], kind: str = "reverse_kl"
) -> Float[Tensor, "N"]:
    """Per-row divergence between the student p and the target q (computed in float32 or wider).

    reverse_kl: KL(p ‖ q) = Σ p (log p − log q)   (mode seeking; the default)
    forward_kl: KL(q ‖ p) = Σ q (log q − log p)   (= cross-entropy to q minus H(q))
    js:         ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {kind!r}")
    log_p = student_log_probs.float() if student_log_probs.dtype in (torch.float16, torch.bfloat16) else student_log_probs
    log_q = target_log_probs.to(log_p.dtype)
    if kind == "reverse_kl":
        return _kl(log_p, log_q)
    if kind == "forward_kl":
        return _kl(log_q, log_p)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * _kl(log_p, log_m) + 0.5 * _kl(log_q, log_m)


def distillation_loss(
    student_log_probs: Float[Tensor, "B L K"],
    soft_targets: Float[Tensor, "B L K"],
    soft_mask: Bool[Tensor, "B L"],
    hard_targets: Int[Tensor, "B L"],
    hard_mask: Bool[Tensor, "B L"],
    kind: str = "reverse_kl",
) -> tuple[Float[Tensor, ""], dict[str, float]]:
    """(Σ_{hard} −log p(x0) + Σ_{soft} D(p ‖ q)) / #(hard ∪ soft).

    Only the selected positions are read, so the −inf entries that SUBS puts at visible
    positions never reach the arithmetic.  The two masks must be disjoint.
    """
    if bool((soft_mask & hard_mask).any()):
        raise ValueError("soft_mask and hard_mask overlap; a position takes one kind of target")
    count = int((soft_mask | hard_mask).sum())
    log_p = student_log_probs.float()
    ce = -log_p[hard_mask].gather(-1, hard_targets[hard_mask].unsqueeze(-1)).squeeze(-1)
    div = divergence(log_p[soft_mask], soft_targets[soft_mask].detach(), kind)
    ce_sum, div_sum = ce.sum(), div.sum()
    loss = (ce_sum + div_sum) / max(count, 1)
    stats = {
        "loss": float(loss.detach()),
        "ce_tokens": int(hard_mask.sum()),
        "div_tokens": int(soft_mask.sum()),
        "ce_mean": float(ce_sum.detach()) / max(int(hard_mask.sum()), 1),
        "div_mean": float(div_sum.detach()) / max(int(soft_mask.sum()), 1),
    }
    return loss, stats


def mcd_loss(
    student_log_probs: Float[Tensor, "B L K"],
    teacher_log_probs: Float[Tensor, "B L K"],
    x0: Int[Tensor, "B L"],
    z_t: Int[Tensor, "B L"],
    z_s: Int[Tensor, "B L"],
    mask_id: int,
    kind: str = "reverse_kl",
    temperature: float = 1.0,
) -> tuple[Float[Tensor, ""], dict[str, float]]:
    """MCD loss on positions masked in z_t: CE on x0 where z_s revealed it, D to the tempered teacher at (z_s, s) where z_s masks it."""
    masked_t = z_t == mask_id
    revealed = masked_t & (z_s != mask_id)
    still_masked = masked_t & (z_s == mask_id)
    return distillation_loss(student_log_probs, temper(teacher_log_probs, temperature), still_masked, x0, revealed, kind)




# ---------------------------------------------------------------------------
# the training loop (`mcd distill`)

METHODS: tuple[str, ...] = ("mcd", "baseline")
COUPLINGS: tuple[str, ...] = ("threshold", "gaussian", "uniform")
REFRESH_FROM: tuple[str, ...] = ("ema", "student")
RUN_KIND = "distilled"


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (stored in its checkpoint)."""

    teacher: str
    out: str
    method: str = "mcd"
    coupling: str = "threshold"
    divergence: str = "reverse_kl"
    start_steps: int = 64
    target_steps: int = 8
    steps_per_round: int = 400
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    refresh_from: str = "ema"
    temperature: bool = True
    temperature_start: float = 0.96
    temperature_step: float = -0.03
    temperature_floor: float = 0.75
    seed: int = 0
    device: str = "auto"
    save_every: int = 100
    log_every: int = 10
    max_steps: int | None = None
    vocab_size: int | None = None
    mask_id: int | None = None
    compile: bool = False
    progress: bool = True

    def validate(self) -> list[int]:
        """ValueError on any bad field; returns the rounds' step counts."""
        for name, allowed in (("method", METHODS), ("coupling", COUPLINGS), ("divergence", DIVERGENCES), ("refresh_from", REFRESH_FROM)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        counts = round_step_counts(self.start_steps, self.target_steps)
        for name in ("steps_per_round", "batch_size", "save_every", "log_every"):
            check_step_count(getattr(self, name), name)
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or self.max_steps < 0):
            raise ValueError(f"max_steps must be a non-negative integer or None, got {self.max_steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not (self.grad_clip > 0):
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")
        for r in range(len(counts)):
            teacher_temperature(r, self.temperature_start, self.temperature_step, self.temperature_floor, self.temperature)
        if Path(self.teacher).resolve() == Path(self.out).resolve():
            raise ValueError(f"out={self.out!r} must differ from teacher={self.teacher!r}")
        return counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# fields that may change between a run and its resumption
_RESUMABLE_CHANGES = {"out", "device", "save_every", "log_every", "max_steps", "compile", "progress", "teacher"}


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator of one optimiser step: the batch of step k depends only on (seed, rank, k),
    which makes resumption exact at any step and gives each DDP rank its own data."""
    mixed = (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 0x5EED) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def check_teacher_compatible(meta: dict[str, Any], source: Any, config: DistillConfig) -> None:
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


def distill(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume, or return the finished) distillation; returns a summary (optimizer_steps,
    teacher_forward_passes, teacher_sequence_evals, wall_time_s, complete, round_steps, step).

    Each round r (dt_r = 1/N_r, N_r = N0/2^r): the frozen teacher is refreshed from the student
    (or its EMA); then `steps_per_round` AdamW steps on the MCD loss (or the baseline's).
    Checkpoints hold student, EMA, frozen teacher and optimiser state, so a run resumes
    exactly mid-round.  Every bad input raises before any training step.
    """
    from tqdm import tqdm

    from . import checkpoint as ckpt
    from .baseline import baseline_targets
    from .data import get_source
    from .model import Denoiser, DenoiserConfig
    from .training import (
        EMA,
        MetricsLogger,
        autocast,
        build_optimizer,
        capture_rng_state,
        ddp_setup,
        is_main_process,
        maybe_compile,
        optimizer_from_tensors,
        optimizer_to_tensors,
        pick_device,
        restore_rng_state,
        set_lr,
        unwrap,
        warmup_lr,
        wrap_ddp,
    )
    from duality import MaskedCoupling
    from theory.schedules import MaskSchedule

    counts = config.validate()
    total_steps = len(counts) * config.steps_per_round

    # ---- teacher, source, schedule; all checks before any training
    teacher_tensors, teacher_meta = ckpt.load_checkpoint(config.teacher)
    if "model_config" not in teacher_meta or "source" not in teacher_meta or "schedule" not in teacher_meta:
        raise ValueError(f"teacher={config.teacher!r} is not a denoiser checkpoint (needs model_config, source, schedule in its meta)")
    source = get_source(**teacher_meta["source"])
    check_teacher_compatible(teacher_meta, source, config)
    model_config = DenoiserConfig.from_dict(teacher_meta["model_config"])
    schedule = MaskSchedule.from_description(teacher_meta["schedule"])
    seq_len = int(teacher_meta.get("seq_len", model_config.seq_len))
    mask_id = model_config.mask_id
    coupling = MaskedCoupling(schedule, vocab_size=model_config.vocab_size, mask_id=mask_id, method=config.coupling)

    resume_tensors: dict[str, Tensor] | None = None
    resume_meta: dict[str, Any] = {}
    if ckpt.checkpoint_path(config.out).is_file():
        resume_tensors, resume_meta = ckpt.load_checkpoint(config.out)
        if resume_meta.get("kind") != RUN_KIND:
            raise ValueError(f"out={config.out!r} holds a checkpoint that is not a distillation run; choose another directory")
        if resume_meta.get("model_config") != model_config.to_dict():
            raise ValueError(
                f"out={config.out!r} was distilled from a teacher with model_config {resume_meta.get('model_config')}, "
                f"not {model_config.to_dict()} (different vocabulary, mask id or shape)"
            )
        previous = resume_meta["distill"]["config"]
        changed = {k for k in previous if k not in _RESUMABLE_CHANGES and previous[k] != getattr(config, k)}
        if changed:
            raise ValueError(
                f"out={config.out!r} holds a run with different settings {sorted(changed)} "
                f"({ {k: previous[k] for k in sorted(changed)} }); use a new --out to start afresh"
            )
        if resume_meta["distill"].get("complete"):
            done = resume_meta["distill"]
            return {**{k: done[k] for k in ("teacher_forward_passes", "teacher_sequence_evals", "wall_time_s", "optimizer_steps")},
                    "complete": True, "round_steps": done["round_steps"], "step": int(resume_meta["step"])}

    rank, world, _ = ddp_setup()
    device = pick_device(config.device)
    main = is_main_process()

    # ---- models: student initialised from the teacher's (EMA) weights; frozen teacher copy
    student = Denoiser(model_config)
    weights = ckpt.subset(teacher_tensors, "model")
    weights.update(ckpt.subset(teacher_tensors, "ema"))
    student.load_state_dict(weights, strict=True)
    student.to(device).train()
    frozen = Denoiser(model_config).to(device).eval()
    frozen.requires_grad_(False)
    frozen.load_state_dict(student.state_dict())
    ema = EMA(student, config.ema_decay)
    optimizer = build_optimizer(student, lr=config.lr, weight_decay=config.weight_decay)

    step = 0
    record: dict[str, Any] = {"teacher_forward_passes": 0, "teacher_sequence_evals": 0, "wall_time_s": 0.0, "optimizer_steps": 0}
    if resume_tensors is not None:
        student.load_state_dict(ckpt.subset(resume_tensors, "model"), strict=True)
        ema.load_state_dict({k: v.to(device) for k, v in ckpt.subset(resume_tensors, "ema").items()})
        frozen.load_state_dict(ckpt.subset(resume_tensors, "teacher"), strict=True)
        optimizer_from_tensors(optimizer, ckpt.subset(resume_tensors, "optim"), resume_meta["distill"]["optimizer"])
        restore_rng_state(ckpt.subset(resume_tensors, "rng"))
        step = int(resume_meta["step"])
        record.update({k: resume_meta["distill"][k] for k in record})

    model = maybe_compile(wrap_ddp(student, device), config.compile)
    logger = MetricsLogger(Path(config.out) / "metrics.jsonl" if main else None)

    def save(complete: bool) -> None:
        if not main:
            return
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        tensors = {
            **ckpt.prefixed("model", unwrap(student).state_dict()),
            **ckpt.prefixed("ema", ema.state_dict()),
            **ckpt.prefixed("teacher", frozen.state_dict()),
            **ckpt.prefixed("optim", opt_tensors),
            **ckpt.prefixed("rng", capture_rng_state()),
        }
        meta = {
            "kind": RUN_KIND,
            "model_config": model_config.to_dict(),
            "source": teacher_meta["source"],
            "schedule": teacher_meta["schedule"],
            "seq_len": seq_len,
            "mask_id": mask_id,
            "step": step,
            "distill": {
                **record,
                "config": config.to_dict(),
                "round_steps": counts,
                "round": min(step // config.steps_per_round, len(counts) - 1),
                "total_steps": total_steps,
                "complete": complete,
                "teacher_meta": {k: teacher_meta.get(k) for k in ("step", "source", "schedule")},
                "optimizer": opt_meta,
                "world_size": world,
            },
        }
        ckpt.save_checkpoint(config.out, tensors, meta)

    stop = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    bar = tqdm(total=total_steps, initial=step, disable=not (main and config.progress), desc=f"distill[{config.method}]", leave=False)
    started = time.perf_counter() - record["wall_time_s"]
    while step < stop:
        round_index = step // config.steps_per_round
        if step % config.steps_per_round == 0:  # new round: refresh the frozen teacher
            with torch.no_grad():
                if config.refresh_from == "ema":
                    ema.copy_to(frozen)
                else:
                    frozen.load_state_dict(unwrap(student).state_dict())
            logger.log({"event": "round", "step": step, "round": round_index, "sampling_steps": counts[round_index]})
        dt = 1.0 / counts[round_index]
        temperature = teacher_temperature(
            round_index, config.temperature_start, config.temperature_step, config.temperature_floor, config.temperature
        )
        generator = step_generator(config.seed, rank, step)
        x0 = source.sample_batch(config.batch_size, seq_len, generator)
        t = stratified_times(config.batch_size, dt, generator)
        lr = warmup_lr(step, config.warmup, config.lr)
        set_lr(optimizer, lr)
        with autocast(device):
            if config.method == "mcd":
                z_t, z_s, s = distillation_batch(x0, coupling, t, dt, generator)
                z_t, z_s, x0_d = z_t.to(device), z_s.to(device), x0.to(device)
                with torch.no_grad():
                    teacher_lp = frozen(z_s, s.float().to(device)).float()
                student_lp = model(z_t, t.float().to(device))
                loss, stats = mcd_loss(student_lp, teacher_lp, x0_d, z_t, z_s, mask_id, config.divergence, temperature)
                forwards = 1
            else:
                noise = coupling.sample_noise(x0, generator=generator)
                z_t = coupling.mask(x0, noise, t).to(device)
                targets, forwards = baseline_targets(frozen, z_t, t.to(device), dt, schedule, mask_id, temperature, generator)
                student_lp = model(z_t, t.float().to(device))
                masked = z_t == mask_id
                loss, stats = distillation_loss(student_lp, targets, masked, torch.zeros_like(z_t), torch.zeros_like(masked), config.divergence)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite distillation loss {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(unwrap(student))
        step += 1
        record["optimizer_steps"] = step
        record["teacher_forward_passes"] += forwards * world
        record["teacher_sequence_evals"] += forwards * world * config.batch_size
        record["wall_time_s"] = time.perf_counter() - started
        bar.update(1)
        if step % config.log_every == 0 or step == stop:
            logger.log({
                "step": step, "round": round_index, "dt": dt, "temperature": temperature, "lr": lr,
                "grad_norm": float(grad_norm), **stats,
                "teacher_forward_passes": record["teacher_forward_passes"], "wall_time_s": record["wall_time_s"],
            })
            bar.set_postfix(loss=f"{stats['loss']:.4f}", round=round_index)
        if step % config.save_every == 0 and step < stop:
            save(complete=False)
    bar.close()
    save(complete=step >= total_steps)
    out = {**record, "complete": step >= total_steps, "round_steps": counts, "step": step}
    return out


# ---------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DistillConfig(teacher="", out="")
    parser.add_argument("--teacher", required=True, help="run directory of the teacher checkpoint")
    parser.add_argument("--out", required=True, help="run directory of the distilled student (resumed if it holds a checkpoint)")
    parser.add_argument("--method", choices=METHODS, default=d.method, help="mcd (analytic coupled pairs) or baseline (stochastic SDTT)")
    parser.add_argument("--coupling", choices=COUPLINGS, default=d.coupling, help="how the per-token coupling noise is drawn")
    parser.add_argument("--divergence", choices=DIVERGENCES, default=d.divergence)
    parser.add_argument("--start-steps", type=int, default=d.start_steps, help="N0: dt = 1/N0 in the first round")
    parser.add_argument("--start-dt", type=float, default=None, help="alternative to --start-steps: dt of the first round (1/N0)")
    parser.add_argument("--target-steps", type=int, default=d.target_steps, help="sampling steps of the final student (N0/2^k)")
    parser.add_argument("--steps-per-round", type=int, default=d.steps_per_round, help="optimiser steps per round")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--warmup", type=int, default=d.warmup)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip)
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay)
    parser.add_argument("--refresh-from", choices=REFRESH_FROM, default=d.refresh_from, help="what the teacher is refreshed from each round")
    parser.add_argument("--no-temperature", action="store_true", help="teacher temperature 1 in every round")
    parser.add_argument("--temperature-start", type=float, default=d.temperature_start)
    parser.add_argument("--temperature-step", type=float, default=d.temperature_step, help="added per round")
    parser.add_argument("--temperature-floor", type=float, default=d.temperature_floor)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--save-every", type=int, default=d.save_every)
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after this many optimiser steps in all")
    parser.add_argument("--vocab-size", type=int, default=None, help="refuse a teacher with another vocabulary")
    parser.add_argument("--mask-id", type=int, default=None, help="refuse a teacher with another mask id")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    start_steps = args.start_steps if args.start_dt is None else steps_from_dt(args.start_dt, "start_dt")
    return DistillConfig(
        teacher=args.teacher, out=args.out, method=args.method, coupling=args.coupling, divergence=args.divergence,
        start_steps=start_steps, target_steps=args.target_steps, steps_per_round=args.steps_per_round,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        grad_clip=args.grad_clip, ema_decay=args.ema_decay, refresh_from=args.refresh_from,
        temperature=not args.no_temperature, temperature_start=args.temperature_start,
        temperature_step=args.temperature_step, temperature_floor=args.temperature_floor, seed=args.seed,
        device=args.device, save_every=args.save_every, log_every=args.log_every, max_steps=args.max_steps,
        vocab_size=args.vocab_size, mask_id=args.mask_id, compile=args.compile, progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from .training import ddp_cleanup, is_main_process

    try:
        config = config_from_args(args)
        result = distill(config)
        main = is_main_process()
    except ValueError as err:
        print(f"mcd distill: error: {err}", file=sys.stderr)
        return 2
    finally:
        ddp_cleanup()

    if main:
        print(
            f"distilled ({config.method}) into {config.out}: {result['optimizer_steps']} optimiser steps, "
            f"{result['teacher_forward_passes']} teacher forward passes, {result['wall_time_s']:.1f} s, "
            f"rounds {result['round_steps']}{'' if result['complete'] else ' (stopped early; rerun to resume)'}"
        )
    return 0
