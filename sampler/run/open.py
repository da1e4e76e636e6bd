"""Open a run for inference: the one place a checkpoint's kind picks its loader and its sampler.

A checkpoint kind is a record (`CheckpointKind`): whether a checkpoint's meta is of the kind, how its model is
built from the loaded tensors, and the sampler that draws from it.  `open_run` loads a checkpoint once, picks
the first kind that claims its meta and returns an `OpenedRun` (model, meta, schedule, device, kind); its
`sample(...)` is the kind's sampler.  `mcd sample`, `mcd eval`, the bench and `sampler.load_run` /
`sampler.sample` all open runs here, so the core (`sampler.checkpoint`) never imports a feature.

Kinds, tried in order:
- "shadow": a shadow student (meta["shadow"]): a ShadowStudent, sampled by the noise-shared sampler with
  noise drawn from the seed (sampler.shadow.student.shadow_sample).
- "ar": the autoregressive reference (`mcd train --objective ar`, meta["kind"] == "ar"): a causal
  TransformerDenoiser, sampled one position at a time (sampler.autoregressive.sample).
- "denoiser": a TransformerDenoiser (a teacher, an MCD or baseline student), sampled by the ancestral sampler
  under bf16 autocast on CUDA (sampler.device.autocast_denoiser), the cache on when it ignores t.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from .. import autoregressive
from ..configs import InferenceConfig  # noqa: F401  (defined torch-free for the command line; re-exported)
from ..checkpoint import CheckpointError, denoiser_from_checkpoint, load_checkpoint, load_schedule
from ..device import autocast_denoiser, pick_device
from ..protocols import Schedule, reads_shadow_noise
from ..sampling import ancestral_sample
from ..shadow.student import is_shadow_meta, shadow_sample, shadow_student_from_checkpoint


def ancestral_checkpoint_sample(
    model: nn.Module, schedule: Schedule, *, num_samples: int, num_steps: int, seq_len: int, seed: int,
    temperature: float = 1.0, final_greedy: bool = False, fixed: Int[Tensor, "N L"] | None = None, cached: bool = True,
    device: torch.device | str = "cpu", batch_size: int = 256, progress: bool = False,
) -> Int[Tensor, "N L"]:
    """The ancestral sampler over a TransformerDenoiser run under autocast(device), generator seeded by `seed`;
    the cache only when asked and the model ignores t (its output equals the uncached sampler's)."""
    config = model.config
    return ancestral_sample(
        autocast_denoiser(model, device), schedule, num_steps=num_steps, num_samples=num_samples, seq_len=seq_len,
        mask_id=config.mask_id, vocab_size=config.vocab_size, generator=torch.Generator().manual_seed(seed),
        temperature=temperature, final_greedy=final_greedy, fixed=fixed,
        cached=cached and not config.time_conditioning, device=device, batch_size=batch_size, progress=progress,
    )


def noise_shared_checkpoint_sample(
    model: nn.Module, schedule: Schedule, *, num_samples: int, num_steps: int, seq_len: int, seed: int,
    temperature: float = 1.0, final_greedy: bool = False, fixed: Int[Tensor, "N L"] | None = None, cached: bool = True,
    device: torch.device | str = "cpu", batch_size: int = 256, progress: bool = False,
) -> Int[Tensor, "N L"]:
    """The noise-shared sampler over a shadow student, its ShadowNoise drawn from `seed` (sampler.shadow.student.
    shadow_sample); `cached` and `progress` do not apply; ValueError for `final_greedy` (every draw reads its noise)."""
    if final_greedy:
        raise ValueError("final_greedy is not available for a shadow student: every draw reads its noise")
    return shadow_sample(model, schedule, num_steps=num_steps, num_samples=num_samples, seq_len=seq_len, seed=seed,
                         temperature=temperature, device=device, batch_size=batch_size, fixed=fixed)


def autoregressive_checkpoint_sample(
    model: nn.Module, schedule: Schedule, *, num_samples: int, num_steps: int, seq_len: int, seed: int,
    temperature: float = 1.0, final_greedy: bool = False, fixed: Int[Tensor, "N L"] | None = None, cached: bool = True,
    device: torch.device | str = "cpu", batch_size: int = 256, progress: bool = False,
) -> Int[Tensor, "N L"]:
    """The autoregressive reference's sampler (sampler.autoregressive.sample): one position at a time, seq_len
    network passes whatever `num_steps` says; `schedule`, `cached` and `progress` do not apply; ValueError for
    `final_greedy` and for a prompt (`fixed`)."""
    if final_greedy or fixed is not None:
        raise ValueError("final_greedy and a prompt are not available for the autoregressive reference")
    return autoregressive.sample(model, num_samples=num_samples, seq_len=seq_len, temperature=temperature,
                                 generator=torch.Generator().manual_seed(seed))


def _is_causal(model: Any) -> bool:
    return bool(getattr(getattr(model, "config", None), "causal", False))


# the signature every kind's sampler shares: (model, schedule, *, num_samples, num_steps, seq_len, seed, ...)
CheckpointSampler = Callable[..., Int[Tensor, "N L"]]


@dataclass(frozen=True)
class CheckpointKind:
    """A kind of checkpoint: `claims(meta)` says whether a checkpoint is of it, `build(tensors, meta, where, device,
    use_ema)` makes its model (eval mode), `sample` draws from that model, `sampler_name` is what reports call it,
    `holds(model)` says whether an in-memory model is of it (for `sampler.sample` on a model)."""

    name: str
    claims: Callable[[dict[str, Any]], bool]
    build: Callable[..., nn.Module]
    sample: CheckpointSampler
    sampler_name: str
    holds: Callable[[Any], bool]


CHECKPOINT_KINDS: list[CheckpointKind] = [
    CheckpointKind("ar", lambda meta: meta.get("kind") == "ar", denoiser_from_checkpoint, autoregressive_checkpoint_sample,
                   "autoregressive", _is_causal),
    CheckpointKind("shadow", is_shadow_meta, shadow_student_from_checkpoint, noise_shared_checkpoint_sample,
                   "noise_shared (shadow student)", reads_shadow_noise),
    CheckpointKind("denoiser", lambda meta: True, denoiser_from_checkpoint, ancestral_checkpoint_sample,
                   "ancestral", lambda model: not reads_shadow_noise(model) and not _is_causal(model)),
]


def register_kind(kind: CheckpointKind) -> CheckpointKind:
    """Add a checkpoint kind, tried before the built-in ones; ValueError when its name is taken."""
    if any(k.name == kind.name for k in CHECKPOINT_KINDS):
        raise ValueError(f"a checkpoint kind named {kind.name!r} is already registered")
    CHECKPOINT_KINDS.insert(0, kind)
    return kind


def kind_of_meta(meta: dict[str, Any], where: str = "the checkpoint") -> CheckpointKind:
    """The first registered kind that claims `meta`; CheckpointError (a ValueError) when none does."""
    for kind in CHECKPOINT_KINDS:
        if kind.claims(meta):
            return kind
    raise CheckpointError(f"{where} is of no known kind (kinds: {[k.name for k in CHECKPOINT_KINDS]})")


def kind_of_model(model: Any) -> CheckpointKind:
    """The kind of an in-memory model (a shadow student reads the noise; anything else is a denoiser)."""
    return next(kind for kind in CHECKPOINT_KINDS if kind.holds(model))


@dataclass
class OpenedRun:
    """A checkpoint opened for inference: its model (eval mode, on `device`), meta, schedule and kind."""

    path: str
    model: nn.Module
    meta: dict[str, Any]
    schedule: Schedule
    device: torch.device
    kind: CheckpointKind

    def sample(self, **options: Any) -> Int[Tensor, "N L"]:
        """The kind's sampler on this run's model: sample(num_samples=, num_steps=, seq_len=, seed=, ...)."""
        return self.kind.sample(self.model, self.schedule, device=self.device, **options)


def open_run(path: str | os.PathLike, device: str | torch.device = "auto", use_ema: bool = True,
             threads: int | None = None) -> OpenedRun:
    """Open the run at `path` (a run directory or its .safetensors file): load and verify its checkpoint once, pick
    its kind from the meta, build its model (EMA weights when present and `use_ema`) on `device` ("auto", "cpu",
    "cuda", "cuda:N" or a torch.device), after torch.set_num_threads(threads) on the CPU when `threads` is given."""
    target = pick_device(device) if isinstance(device, str) else torch.device(device)
    if target.type == "cpu" and threads:
        torch.set_num_threads(threads)
    tensors, meta = load_checkpoint(path)
    kind = kind_of_meta(meta, f"checkpoint at {str(path)!r}")
    model = kind.build(tensors, meta, str(path), target, use_ema)
    return OpenedRun(str(path), model, meta, load_schedule(meta), target, kind)


def open_for_inference(config: InferenceConfig) -> OpenedRun:
    """open_run with an InferenceConfig's checkpoint, device, weights (no_ema) and threads."""
    return open_run(config.ckpt, config.device, use_ema=not config.no_ema, threads=config.threads)


__all__ = ["InferenceConfig", "CheckpointKind", "CHECKPOINT_KINDS", "OpenedRun", "open_run", "open_for_inference",
           "register_kind", "kind_of_meta", "kind_of_model", "ancestral_checkpoint_sample", "noise_shared_checkpoint_sample"]
