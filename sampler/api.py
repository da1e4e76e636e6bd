"""The thin library helpers behind `sampler`'s public API, where the CLI's path has no library function.

- `load_run(path)` -> `Run`: a trained run (teacher or distilled student) opened for inference: its
  denoiser, schedule, source, mask id, vocabulary, sequence length (what `mcd sample` / `mcd eval` open).
- `sample(denoiser, schedule, num_samples, num_steps, seed=...)`: the ancestral sampler
  (`sampler.sampling.ancestral_sample`) with a seed, a prompt (`prefix`) or pinned positions
  (`infill`), temperature, final greedy step and the cache chosen from the denoiser's config.
- `distill_module(teacher, schedule, source, config)`: MCD (or the stochastic baseline) of a
  denoiser module held in memory, e.g. your own network wrapped in `ModuleDenoiser`, with the
  step functions, rounds and loop `sampler.train.distill` uses on a checkpoint.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from duality import MaskedCoupling

from .checkpoint import load_source, prefixed, save_checkpoint
from .data import DataSource
from .device import autocast_denoiser, pick_device
from .protocols import Denoiser, NoiseConditionedDenoiser, Schedule
from .run.open import kind_of_model, open_run
from .rundir import check_output_path, run_dir_lock
from .sampling import ancestral_sample, check_seed, prefix_tokens
from .train.config import DistillConfig
from .train.context import DistillContext, ExactTeacher
from .train.distill import rounds_hook
from .train.loop import LoopHooks, run_loop
from .train.methods import distill_method
from .train.runtime import EMA, MetricsLogger, Trainee, build_optimizer, maybe_compile


@dataclass
class Run:
    """A trained run opened for inference (see `load_run`).

    `denoiser` is the `TransformerDenoiser` in eval mode (a `Denoiser`); `schedule` the masked
    schedule it was trained with; `source` (built on first use) the data source it was trained on;
    `meta` the checkpoint's metadata.  `kind` is "teacher" (`mcd train`) or "distilled" (`mcd distill`).

    Example::

        run = sampler.load_run("runs/teacher")
        run.mask_id, run.vocab_size, run.seq_len, run.kind     # (32, 32, 64, 'teacher')
    """

    path: str
    denoiser: nn.Module
    schedule: Schedule
    meta: dict[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "teacher"))

    @property
    def mask_id(self) -> int:
        return int(self.denoiser.config.mask_id)

    @property
    def vocab_size(self) -> int:
        return int(self.denoiser.config.vocab_size)

    @property
    def seq_len(self) -> int:
        return int(self.denoiser.config.seq_len)

    @property
    def step(self) -> int | None:
        return self.meta.get("step")

    @cached_property
    def source(self) -> DataSource:
        """The run's data source, `sampler.data.get_source(**meta["source"])` (built once, on first use)."""
        return load_source(self.meta)


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True) -> Run:
    """Open a run directory written by `mcd train` / `mcd distill` (or `sampler.train.train` / `sampler.train.distill`).

    EMA weights when the checkpoint holds them and `use_ema` (the default, as `mcd sample`);
    `device` "cpu", "cuda", "cuda:N" or "auto".  CheckpointError (a ValueError) when the
    directory holds no valid checkpoint.  A shadow student's run opens as its ShadowStudent
    (`sampler.sample` then uses the noise-shared sampler), as `mcd sample` does (sampler.run.open).

    Example::

        run = sampler.load_run("runs/teacher")
        x = sampler.sample(run.denoiser, run.schedule, num_samples=16, num_steps=64, seed=0)
    """
    opened = open_run(path, device, use_ema=use_ema)
    return Run(path=str(path), denoiser=opened.model, schedule=opened.schedule, meta=opened.meta)


def _config_value(denoiser: Any, name: str, given: int | None) -> int:
    """`given`, or the denoiser's config.<name> (or attribute <name>); ValueError naming `name` when
    neither exists or they disagree."""
    known = getattr(getattr(denoiser, "config", None), name, getattr(denoiser, name, None))
    if given is None:
        if known is None:
            raise ValueError(f"{name} must be given: the denoiser has no config.{name}")
        return int(known)
    if known is not None and name != "seq_len" and int(given) != int(known):
        raise ValueError(f"{name}={given!r} disagrees with the denoiser's {name}={known}")
    return given


def _fixed_tokens(
    prefix: Any, infill: Any, num_samples: int, seq_len: int, vocab_size: int, mask_id: int
) -> Int[Tensor, "N L"] | None:
    """The sampler's `fixed` argument: a prompt in the first positions (sampling.prefix_tokens), or an infill
    pattern (mask_id where free)."""
    if prefix is not None and infill is not None:
        raise ValueError("give prefix or infill, not both")
    if prefix is not None:
        return prefix_tokens(_token_ids(prefix, "prefix", (0, 1)), num_samples, seq_len, vocab_size, mask_id)
    if infill is not None:
        pattern = _token_ids(infill, "infill", (1, 2))
        if pattern.dim() == 1:
            pattern = pattern.expand(num_samples, -1)
        if tuple(pattern.shape) != (num_samples, seq_len):
            raise ValueError(f"infill must have shape ({seq_len},) or ({num_samples}, {seq_len}), got {tuple(pattern.shape)}")
        return pattern.clone()
    return None


def _token_ids(value: Any, name: str, dims: tuple[int, ...]) -> Tensor:
    """`value` (a list or tensor of token ids) as int64, refused by name unless it holds integers (not bools,
    not fractions: [3.7] is not truncated to [3]) with one of the allowed numbers of dimensions."""
    try:
        ids = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a list or tensor of integer token ids, got {value!r:.80}") from err
    if ids.numel() and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):  # [] is float: allowed
        raise ValueError(f"{name} must hold integer token ids, got {ids.dtype} values {ids.reshape(-1)[:8].tolist()}")
    if ids.dim() not in dims:
        shapes = " or ".join({0: "()", 1: "(length,)", 2: "(num_samples, seq_len)"}[d] for d in dims)
        raise ValueError(f"{name} must have shape {shapes}, got shape {tuple(ids.shape)}"
                         + ("; one prompt for every sample (use infill for per-sample tokens)" if name == "prefix" else ""))
    return ids.to(torch.long)


def _check_sample_arguments(schedule: Any, seed: Any, device: Any) -> tuple[int, torch.device | None]:
    """(seed, device) of `sample` after checking them and the schedule by name, before any work."""
    if not callable(getattr(schedule, "alpha", None)):
        raise ValueError(f"schedule must be a masking schedule with alpha(t) (e.g. run.schedule), got {type(schedule).__name__}")
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise ValueError(f"device must be a str or torch.device, got {type(device).__name__}")
        device = pick_device(str(device))  # refuses 'meta', and 'cuda' without CUDA, by name
    return check_seed(seed), device


def sample(
    denoiser: Denoiser | NoiseConditionedDenoiser,
    schedule: Schedule,
    *,
    num_samples: int,
    num_steps: int,
    seed: int = 0,
    temperature: float = 1.0,
    final_greedy: bool = False,
    prefix: Any = None,
    infill: Any = None,
    cached: bool | None = None,
    seq_len: int | None = None,
    vocab_size: int | None = None,
    mask_id: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Int[Tensor, "N L"]:
    """num_samples sequences (CPU int64, Int[N, L]) by num_steps ancestral steps t_i = i/N, seeded.

    Every step unmasks each masked token with probability (α_s − α_t)/(1 − α_t) to a draw from
    p(x0 | z_t)^{1/T} (temperature T); `final_greedy` takes the argmax in the last step.
    `prefix` (token ids) pins the first positions; `infill` (Int[L] or Int[N, L], mask_id where
    free) pins any positions.  seq_len, vocab_size and mask_id default to the denoiser's
    `config` (a `TransformerDenoiser`, a `ModuleDenoiser`); give them for a plain callable.
    `cached` (skip the network for sequences the last step left unchanged; same output) defaults
    to on exactly when the config says the denoiser ignores t.  The same seed gives the same
    samples on any device (the draws use a CPU generator); on CUDA the network runs under bf16 autocast.
    A shadow student (it reads the noise: `sampler.load_run` of a `--method shadow` run) is sampled by its
    kind's sampler (sampler.run.open): the noise-shared sampler, its noise drawn from `seed`.

    Example::

        x = sampler.sample(run.denoiser, run.schedule, num_samples=8, num_steps=64, seed=0,
                           temperature=0.9, prefix=[3, 1, 4])
    """
    seed, device = _check_sample_arguments(schedule, seed, device)
    config = getattr(denoiser, "config", None)
    length = _config_value(denoiser, "seq_len", seq_len)
    if seq_len is not None and getattr(config, "seq_len", seq_len) < seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the denoiser's seq_len={config.seq_len}")
    vocab = _config_value(denoiser, "vocab_size", vocab_size)
    mask = _config_value(denoiser, "mask_id", mask_id)
    if device is None:
        device = next(denoiser.parameters(), torch.empty(0)).device if isinstance(denoiser, nn.Module) else "cpu"
    if cached is None:
        cached = config is not None and not getattr(config, "time_conditioning", True)
    fixed = _fixed_tokens(prefix, infill, num_samples, length, vocab, mask)
    kind = kind_of_model(denoiser)
    if kind.name != "denoiser":  # a model whose kind has its own sampler (a shadow student: noise-shared)
        return kind.sample(denoiser, schedule, num_samples=num_samples, num_steps=num_steps, seq_len=length, seed=seed,
                           temperature=temperature, final_greedy=final_greedy, fixed=fixed, cached=cached,
                           device=device, batch_size=batch_size, progress=progress)
    network = denoiser
    if config is not None and torch.device(device).type == "cuda":
        network = autocast_denoiser(denoiser, torch.device(device))  # bf16 autocast, config kept
    generator = torch.Generator().manual_seed(seed)
    return ancestral_sample(
        network, schedule, num_steps=num_steps, num_samples=num_samples, seq_len=length, mask_id=mask, vocab_size=vocab,
        generator=generator, temperature=temperature, final_greedy=final_greedy, fixed=fixed, cached=cached,
        device=device, batch_size=batch_size, progress=progress,
    )


MODULE_RUN_KIND = "distilled-module"


def _check_module_teacher(teacher: Any, source: DataSource, config: DistillConfig) -> tuple[int, int, int]:
    """(vocab_size, mask_id, seq_len) of an in-memory teacher; ValueError naming the argument that does not fit."""
    cfg = getattr(teacher, "config", None)
    if not isinstance(teacher, nn.Module) or not all(hasattr(cfg, n) for n in ("vocab_size", "mask_id", "seq_len")):
        raise ValueError("teacher must be an nn.Module denoiser with config.vocab_size, config.mask_id and "
                         f"config.seq_len (wrap your network in sampler.ModuleDenoiser), got {type(teacher).__name__}")
    vocab, mask, length = int(cfg.vocab_size), int(cfg.mask_id), int(cfg.seq_len)
    if int(source.vocab_size) != vocab:
        raise ValueError(f"source has vocab_size={source.vocab_size} but the teacher has vocab_size={vocab}")
    if config.vocab_size is not None and config.vocab_size != vocab:
        raise ValueError(f"config.vocab_size={config.vocab_size} but the teacher has vocab_size={vocab}")
    if config.mask_id is not None and config.mask_id != mask:
        raise ValueError(f"config.mask_id={config.mask_id} but the teacher has mask_id={mask}")
    if Path(config.out, "checkpoint.safetensors").exists():
        raise ValueError(f"config.out={config.out!r} already holds a checkpoint; distill_module does not resume, "
                         "choose a new out")
    return vocab, mask, length


def distill_module(teacher: Denoiser, schedule: Schedule, source: DataSource, config: DistillConfig) -> dict[str, Any]:
    """Distil an in-memory denoiser module into a few-step student (MCD, or config.method="baseline"; a method
    whose record (sampler.train.methods) cannot take an in-memory teacher, such as "shadow", is refused by name
    before any file is written).

    `teacher`: an nn.Module denoiser with a `config` holding vocab_size, mask_id, seq_len: your own
    network wrapped in `sampler.ModuleDenoiser`, or a `TransformerDenoiser`.  The student starts as a
    deep copy of it and is trained by the step functions, rounds (dt doubling from 1/start_steps to
    1/target_steps, teacher refreshed from the student's EMA (or, with config.exact_teacher, the source's
    exact denoiser in every round), teacher temperature) and training loop
    of `sampler.train.distill`, on x0 drawn from `source` (which must share the teacher's vocabulary).
    `config` is a `sampler.DistillConfig`; its `teacher` field is only a label stored in the
    checkpoint.  Returns `sampler.train.distill`'s summary plus "student": a copy of the student holding
    its EMA weights, in eval mode.  config.out receives metrics.jsonl and a checkpoint ("model.*",
    "ema.*", "teacher.*", "optim.*"; reload with `sampler.checkpoint.load_checkpoint`).

    Supported: one process (no torchrun), a run from scratch (config.out must not hold a
    checkpoint; no resume), a module that `copy.deepcopy` can copy.  For a `TransformerDenoiser`
    saved as a run directory, `sampler.train.distill` (which resumes and runs under torchrun) is the path.

    Example::

        config = sampler.DistillConfig(teacher="my-net", out="runs/my-student", start_steps=16,
                                       target_steps=4, steps_per_round=200)
        result = sampler.distill_module(denoiser, schedule, source, config)
        x = sampler.sample(result["student"], schedule, num_samples=8, num_steps=4)
    """
    method = distill_method(config.method)
    if method.module_teacher is not None:  # refused by name before any file is written
        raise ValueError(f"distill_module cannot run method={config.method!r}: {method.module_teacher}")
    counts = config.validate()
    check_output_path(config.out, kind="dir", name="config.out")
    if config.seed is None:  # a run from scratch: seed None means 0 (RunConfig)
        config = replace(config, seed=0)
    vocab, mask, length = _check_module_teacher(teacher, source, config)
    device = pick_device(config.device)
    if device.type == "cpu" and config.threads is not None:
        torch.set_num_threads(config.threads)
    student = copy.deepcopy(teacher).to(device).train()
    frozen = ExactTeacher(source, mask).eval() if config.exact_teacher else copy.deepcopy(student).eval().requires_grad_(False)
    trainee = Trainee(student, maybe_compile(student, config.compile), build_optimizer(student, config.lr, config.weight_decay),
                      EMA(student, config.ema_decay))
    coupling = MaskedCoupling(schedule, vocab_size=vocab, mask_id=mask, method=config.coupling)
    ctx = DistillContext(trainee, frozen, source, coupling, schedule, config, counts, length, mask, 0, 1, device)
    total = len(counts) * config.steps_per_round
    logger = MetricsLogger(Path(config.out) / "metrics.jsonl")
    teacher_config = asdict(teacher.config) if hasattr(teacher.config, "__dataclass_fields__") else None
    started = time.perf_counter()

    def save(at_step: int) -> None:
        ctx.record.update(wall_time_s=time.perf_counter() - started, optimizer_steps=at_step)
        tensors, opt_meta = trainee.state_tensors()
        meta = {"kind": MODULE_RUN_KIND, "module_config": teacher_config, "source": source.describe(),
                "schedule": schedule.describe(), "seq_len": length, "mask_id": mask, "step": at_step,
                "distill": {**ctx.record, "config": config.to_dict(), "round_steps": counts, "total_steps": total,
                            "complete": at_step >= total, "optimizer": opt_meta}}
        save_checkpoint(config.out, {**tensors, **prefixed("teacher", frozen.state_dict())}, meta)

    hooks = LoopHooks(save=save, before_step=rounds_hook(ctx, logger),
                      log_fields=lambda _: {"round": ctx.round_index, "dt": ctx.dt, "temperature": ctx.temperature})
    stop = total if config.max_steps is None else min(total, config.max_steps)
    with run_dir_lock(config.out, "sampler.distill_module"):
        result = run_loop(trainee, method.step(ctx), hooks, config, config, logger, stop=stop,
                          desc=f"distill_module[{config.method}]", tokens_per_step=config.batch_size * length)
    averaged = copy.deepcopy(student).eval()
    trainee.ema.copy_to(averaged)
    return {**ctx.record, "complete": result.step >= total, "round_steps": counts, "step": result.step,
            "interrupted": result.interrupted, "student": averaged}


__all__ = ["Run", "load_run", "sample", "distill_module", "MODULE_RUN_KIND"]
