"""The runtime of the training loop (sampler.train.loop), shared by every training command.

- EMA(model, decay): θ_ema ← decay·θ_ema + (1 − decay)·θ after each step.
- build_optimizer: AdamW, weight decay on matrices only (dim ≥ 2), none on norms/biases.
- warmup_lr: linear warmup lr·min(1, (step + 1)/warmup), then constant.
- maybe_compile: torch.compile when asked and available; check_compile_device refuses it off CUDA.
- training_memory_bytes / check_training_memory: a lower estimate of one training step's memory
  against the device's memory, so an impossible --batch-size or --seq-len fails before any work.
- ddp_setup / is_main_process / unwrap: torchrun + DistributedDataParallel plumbing.
- MetricsLogger: one JSON object per line (values through sampler.data.json_ready).
- Trainee: model + wrapped forward + optimiser + EMA, and its checkpoint tensors.
- capture_rng_state / restore_rng_state: python, numpy, torch (CPU and CUDA) and named
  torch.Generator states as uint8/int64 tensors, so a checkpoint can hold them (no pickles).
- optimizer_to_tensors / optimizer_from_tensors: an optimizer's state_dict split into
  tensors (for safetensors) and a JSON-able remainder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import DiskFullError, atomic_write_bytes, prefixed, subset
from ..data.metrics import json_ready, strict_json


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    θ_ema ← d·θ_ema + (1 − d)·θ with d = min(decay, (1 + step)/(10 + step)) when the step is
    given (so early weights, far from trained, are forgotten fast); float32 on the model's device.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {
            name: p.detach().clone().float() for name, p in model.state_dict().items() if p.is_floating_point()
        }

    def decay_at(self, step: int | None) -> float:
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        weight = 1.0 - self.decay_at(step)
        for name, p in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), weight)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones."""
        own = model.state_dict()
        for name, value in self.shadow.items():
            own[name].copy_(value.to(own[name].dtype))

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily run `model` with EMA weights (restored afterwards)."""
        backup = {name: p.detach().clone() for name, p in model.state_dict().items() if name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            own = model.state_dict()
            with torch.no_grad():
                for name, value in backup.items():
                    own[name].copy_(value)


def build_optimizer(
    model: nn.Module, lr: float = 3e-4, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW with weight decay on parameters of dim ≥ 2 only (matrices, embeddings)."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_lr(step: int, warmup: int, base_lr: float, total: int | None = None, final_frac: float = 1.0) -> float:
    """lr at 0-based `step`: base·(step + 1)/warmup during warmup; then constant, or, with
    `total` and final_frac < 1, cosine decay to base·final_frac at step `total`."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if total is None or final_frac >= 1.0 or total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile(model) when enabled (a warning and the plain model if compile fails)."""
    if not enabled:
        return model
    try:
        return torch.compile(model)  # type: ignore[return-value]
    except Exception as err:  # compile is an optimisation, never a reason to stop
        print(f"warning: torch.compile failed ({err}); running uncompiled")
        return model


def check_compile_device(enabled: bool, device: torch.device) -> None:
    """ValueError for --compile off CUDA: it would do nothing there (the loop compiles on CUDA only)."""
    if enabled and torch.device(device).type != "cuda":
        raise ValueError(f"--compile needs a CUDA device (torch.compile is used on CUDA only); the device here is {device}")


def training_memory_bytes(model_config: Any, batch_size: int, seq_len: int) -> int:
    """A lower estimate of the memory of one training step of a TransformerDenoiser, in bytes:

        20·P                                  weights, gradients, two AdamW moments and the EMA (float32),
                                              P ≈ 12·d²·n_layers + 2·(V + 1)·d
      + 4·B·L·(24·d·n_layers + 4·V)           activations kept for the backward pass: about 24 d-vectors per
                                              token and layer (qkv, attention output, two norms, residuals, the
                                              4·d MLP hidden before and after its activation) and the logits,
                                              their log-softmax and gradients.

    The attention scores (B·H·L² per layer) are left out: scaled_dot_product_attention's fused kernels do
    not store them (measured on the CPU: peak memory linear in L from L = 1024 to 4096, about 25 kB per
    token of the tiny model, where this formula gives 25 kB), and counting them would refuse runs that fit."""
    d, layers, vocab = model_config.d_model, model_config.n_layers, model_config.vocab_size
    params = 12 * d * d * layers + 2 * (vocab + 1) * d
    return 20 * params + 4 * batch_size * seq_len * (24 * d * layers + 4 * vocab)


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of the device: the GPU's (torch.cuda.mem_get_info) or the machine's physical memory
    (os.sysconf; psutil may not be installed); None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_training_memory(model_config: Any, batch_size: int, seq_len: int, device: torch.device) -> None:
    """ValueError naming --batch-size and --seq-len when even the lower estimate of one training step
    (training_memory_bytes) exceeds the device's memory."""
    need, have = training_memory_bytes(model_config, batch_size, seq_len), device_memory_bytes(device)
    if have is not None and need > have:
        raise ValueError(
            f"--batch-size {batch_size} with --seq-len {seq_len} needs at least {need / 2**30:.1f} GiB for one training step "
            f"(activations ~ 4·batch·seq_len·(24·d_model·n_layers + 4·vocab) bytes), more than the {have / 2**30:.1f} GiB "
            f"of {device}; lower --batch-size or --seq-len"
        )


# --- distributed (torchrun) ----------------------------------------------------------------


def ddp_setup() -> tuple[int, int, int]:
    """Initialise torch.distributed when launched by torchrun (RANK/WORLD_SIZE set).

    Returns (rank, world_size, local_rank); (0, 1, 0) in a plain process.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return rank, world, local


def ddp_cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel(model) when torch.distributed is initialised, else the model."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


# --- metrics -------------------------------------------------------------------------------


class MetricsLogger:
    """Appends one JSON object per line to `path` (flushed each call); no-op when path is None."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"time": round(time.time(), 3), **json_ready(record)}
        try:
            with open(self.path, "a") as f:
                f.write(strict_json(record) + "\n")
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFullError(err.errno, f"no space left on the device (or quota) while appending to {str(self.path)!r}: "
                                "the last checkpoint is intact; free some space and resume the run") from err


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# events logged *before* the step they name runs (the distillation's round start): on a resume at that
# step they are logged again, so the copy written before the kill goes
_RELOGGED_EVENTS = frozenset({"round"})


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Cut a run's metrics.jsonl back to a checkpoint at `step` before resuming from it: drop every
    record of a later step (written between that checkpoint and the kill, about to be written again)
    and the round events of `step` itself (logged again on resume); records without a step, and
    every record up to `step` (including the eval and end records of that step), stay.  A torn last
    line (a kill mid-write) goes too.  Atomic rewrite; returns the number of records dropped."""
    file = Path(path)
    if not file.is_file():
        return 0
    kept, dropped = [], 0
    for line in file.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = None
        at = record.get("step") if isinstance(record, dict) else None
        later = isinstance(at, (int, float)) and (at > step or (at == step and record.get("event") in _RELOGGED_EVENTS))
        if record is None or later:
            dropped += bool(line.strip())
            continue
        kept.append(line)
    if dropped:
        atomic_write_bytes(file, "".join(line + "\n" for line in kept).encode())
    return dropped


# --- RNG state for exact resume ------------------------------------------------------------


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Tensor]:
    """All random states as tensors: python (int64), numpy MT19937 (int64), torch CPU (uint8),
    torch CUDA per device (uint8), and each named torch.Generator (uint8)."""
    version, internal, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor(
            [0.0 if gauss_next is None else gauss_next, float(gauss_next is not None)], dtype=torch.float64
        ),
        "numpy": torch.tensor(np.concatenate([np_keys.astype(np.int64), [np_pos, np_has_gauss]]), dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    for name, gen in (generators or {}).items():
        state[f"gen.{name}"] = gen.get_state()
    return state


def restore_rng_state(state: dict[str, Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of capture_rng_state; ValueError if a named generator's state is missing."""
    py = state["python"].tolist()
    gauss_value, has_gauss = state["python_gauss"].tolist()
    random.setstate((int(py[0]), tuple(int(v) for v in py[1:]), gauss_value if has_gauss else None))
    np_all = state["numpy"].numpy()
    np.random.set_state(
        ("MT19937", np_all[:-2].astype(np.uint32), int(np_all[-2]), int(np_all[-1]), float(state["numpy_gauss"][0]))
    )
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if torch.cuda.is_available():
        cuda_states = [state[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in state]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda_states])
    for name, gen in (generators or {}).items():
        key = f"gen.{name}"
        if key not in state:
            raise ValueError(f"checkpoint has no state for generator {name!r}")
        gen.set_state(state[key].to(torch.uint8).cpu())


# --- optimizer state <-> tensors + JSON ------------------------------------------------------


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split optimizer.state_dict() into {"<param index>.<key>": tensor} and the JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Load what optimizer_to_tensors produced into `optimizer` (moved to each param's device by torch)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    if len(groups) != len(optimizer.param_groups) or any(
        len(g["params"]) != len(og["params"]) for g, og in zip(groups, optimizer.param_groups)
    ):
        raise ValueError("optimizer state in the checkpoint does not match the model's parameters")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- the trainee and its checkpointed state --------------------------------------------------


@dataclass
class Trainee:
    """What the training loop updates: `model` (the plain module: clipped, averaged, saved),
    `forward` (what step functions call: `model` under DDP / torch.compile wrappers), its AdamW
    optimiser and EMA.  `ema_warmup`: EMA decay min(decay, (1 + step)/(10 + step)) at each step
    (the teacher) instead of the constant decay (distillation)."""

    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA
    ema_warmup: bool = False

    def state_tensors(self, generators: dict[str, torch.Generator] | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """({"model.*", "ema.*", "optim.*", "rng.*"} tensors, the optimiser's JSON-able remainder)."""
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer)
        tensors = {
            **prefixed("model", unwrap(self.model).state_dict()),
            **prefixed("ema", self.ema.state_dict()),
            **prefixed("optim", opt_tensors),
            **prefixed("rng", capture_rng_state(generators)),
        }
        return tensors, opt_meta

    def load_state_tensors(
        self, tensors: dict[str, Tensor], optimizer_meta: dict[str, Any], generators: dict[str, torch.Generator] | None = None
    ) -> None:
        """Inverse of state_tensors: weights, EMA, optimiser and RNG states back into the live objects."""
        device = next(self.model.parameters()).device
        unwrap(self.model).load_state_dict(subset(tensors, "model"), strict=True)
        self.ema.load_state_dict({k: v.to(device) for k, v in subset(tensors, "ema").items()})
        optimizer_from_tensors(self.optimizer, subset(tensors, "optim"), optimizer_meta)
        restore_rng_state(subset(tensors, "rng"), generators)
