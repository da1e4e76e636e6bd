"""Checkpoints: one safetensors file plus a JSON copy of its metadata; no pickles.

Layout of a run directory RUN:
  RUN/checkpoint.safetensors  every tensor ("model.*", "ema.*", "optim.*", "rng.*", ...); its
                              header metadata holds the JSON meta and a SHA-256 digest of the tensors
                              and of that JSON meta (format_version 2)
  RUN/config.json             the same meta, human-readable (the safetensors copy is authoritative)
  RUN/metrics.jsonl           training metrics (written by the training loop)

Atomicity: each file is written to a temporary file in RUN, flushed, fsync'd and moved into
place with os.replace, so a crash or an exception mid-write leaves the previous checkpoint
intact.  The tensors and meta live in the one safetensors file, so they can never disagree.
Loading verifies the digest: a truncated or altered file is a clear CheckpointError, whether the
change hit a tensor or the metadata (a flipped source seed, step or schedule).  Checkpoints of
format_version 1 (written before the digest covered the metadata) still load: their digest covers the
tensors only, so their metadata is unprotected.  A version-2 file whose meta was altered to claim
version 1 is still refused (its stored digest is not the tensors-only one).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from theory import MaskSchedule

from .data import get_source
from .model import DenoiserConfig, TransformerDenoiser
from .names import CHECKPOINT_FILE, CONFIG_FILE  # noqa: F401  (the run directory's file names, re-exported)
from .rundir import checkpoint_path  # noqa: F401  (torch-free for the command line; re-exported)

FORMAT_VERSION = 2
TENSORS_ONLY_DIGEST_VERSION = 1  # format_version whose digest covers the tensors only


class CheckpointError(ValueError):
    """A missing, corrupt or incompatible checkpoint."""


class DiskFullError(OSError, ValueError):
    """An atomic write ran out of space (ENOSPC or a quota); the file it was replacing is intact.  An OSError with
    the errno, and a ValueError so that every command prints it as its one-line error."""


class ShadowCheckpointError(CheckpointError):
    """A shadow student's checkpoint handed to the plain (noise-free) loader."""


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_digest(tensors: dict[str, Tensor], meta_json: str) -> str:
    """SHA-256 over the tensor digest and the exact JSON meta text: everything load_checkpoint reads back."""
    return hashlib.sha256(f"{tensor_digest(tensors)}|meta|".encode() + meta_json.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same directory, fsync, os.replace), with the
    mode of an ordinary new file under the user's umask (not mkstemp's 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(err.errno, f"no space left on the device (or quota) while writing {str(path)!r}: "
                                f"{'the previous file there is intact' if path.exists() else 'nothing was written there'} "
                                "(the new one went to a temporary file, now removed); free some space and run "
                                "the command again (a training run resumes from its last checkpoint)") from err
        raise


def save_checkpoint(run_dir: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write `tensors` and JSON-able `meta` to RUN; returns the safetensors path.

    The previous checkpoint (if any) stays intact unless the new one was written completely.
    """
    from safetensors.torch import save as safetensors_save  # only commands that write a checkpoint load it

    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, value in tensors.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"tensors[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
    # safetensors refuses shared or non-contiguous storage: own, contiguous CPU copies
    cpu = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    full_meta = {**meta, "format_version": FORMAT_VERSION}
    try:
        meta_json = json.dumps(full_meta, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"meta must be JSON-serialisable: {err}") from err
    blob = safetensors_save(cpu, metadata={"meta": meta_json, "digest": checkpoint_digest(cpu, meta_json)})
    atomic_write_bytes(path, blob)
    atomic_write_bytes(path.parent / CONFIG_FILE, (json.dumps(full_meta, indent=2, sort_keys=True) + "\n").encode())
    return path


def load_checkpoint(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta) from RUN; CheckpointError when missing, unreadable, or failing its digest."""
    from safetensors.torch import load as safetensors_load  # only commands that read a checkpoint load it

    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r} (expected a run directory holding {CHECKPOINT_FILE})")
    data = path.read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        metadata = header.get("__metadata__") or {}
        tensors = safetensors_load(data)
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a safetensors file: {err}") from err
    if "meta" not in metadata or "digest" not in metadata:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks its metadata (not written by save_checkpoint?)")
    meta = _verified_meta(path, tensors, metadata)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def _verified_meta(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """The meta of a loaded file after checking its digest: over tensors + meta (format_version 2), or over
    the tensors only for a file that is self-consistently format_version 1."""
    digest_ok = checkpoint_digest(tensors, metadata["meta"]) == metadata["digest"]
    try:
        meta = json.loads(metadata["meta"])
    except json.JSONDecodeError as err:
        if digest_ok:
            raise CheckpointError(f"checkpoint {str(path)!r} has unreadable metadata: {err}") from err
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: digest mismatch (unreadable metadata)") from err
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not digest_ok and version == TENSORS_ONLY_DIGEST_VERSION:
        digest_ok = tensor_digest(tensors) == metadata["digest"]
    if not digest_ok:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: digest mismatch (tensors or metadata altered)")
    if version not in (TENSORS_ONLY_DIGEST_VERSION, FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {str(path)!r} has format_version {version!r}, expected {FORMAT_VERSION} (or {TENSORS_ONLY_DIGEST_VERSION})")
    return meta


def subset(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors named prefix + "." + rest, keyed by rest."""
    p = prefix + "."
    return {name[len(p) :]: value for name, value in tensors.items() if name.startswith(p)}


def model_weights(tensors: dict[str, Tensor], use_ema: bool = True) -> dict[str, Tensor]:
    """The "model.*" weights of a run, with the "ema.*" ones in their place when present and use_ema."""
    ema = subset(tensors, "ema") if use_ema else {}
    return {**subset(tensors, "model"), **ema}


def prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


def load_denoiser(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple["torch.nn.Module", dict[str, Any]]:
    """(TransformerDenoiser in eval mode on `device`, meta) from RUN; EMA weights when present and asked for."""
    tensors, meta = load_checkpoint(run_dir)
    return denoiser_from_checkpoint(tensors, meta, str(run_dir), device, use_ema), meta


def denoiser_from_checkpoint(
    tensors: dict[str, Tensor], meta: dict[str, Any], where: str, device: str | torch.device = "cpu", use_ema: bool = True
) -> "torch.nn.Module":
    """The TransformerDenoiser (eval mode, on `device`) of a loaded checkpoint (`where` names it in errors);
    ShadowCheckpointError for a shadow student's checkpoint (it needs its own loader: sampler.run.open picks it)."""
    if "shadow" in meta:
        raise ShadowCheckpointError(f"checkpoint at {where!r} is a shadow student: it reads per-token noise and needs "
                                    "the noise-shared sampler (sampler.shadow.student.load_shadow_student; "
                                    "sampler.run.open.open_run, mcd sample and mcd eval pick it)")
    if "model_config" not in meta:
        raise CheckpointError(f"checkpoint at {where!r} has no model_config (not a denoiser checkpoint?)")
    try:
        config = DenoiserConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint at {where!r} has an invalid model_config: {err}") from err
    model = TransformerDenoiser(config)
    try:
        model.load_state_dict(model_weights(tensors, use_ema), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint at {where!r} does not match its model_config: {err}") from err
    return model.to(device).eval()


def make_schedule(name: str = "loglinear", **params: Any) -> Any:
    """A theory mask schedule by its registered name ("loglinear", "cosine", "polynomial", see
    theory.schedules) and its parameters; the registry is theory's own (MaskSchedule.from_description)."""
    return MaskSchedule.from_description({"name": name, "params": params})


def load_schedule(meta: dict[str, Any]) -> Any:
    """The schedule a checkpoint was trained with: MaskSchedule.from_description(meta["schedule"])."""
    spec = meta.get("schedule")
    try:
        return MaskSchedule.from_description(spec)
    except ValueError as err:
        raise CheckpointError(f"checkpoint meta has no valid 'schedule' entry ({spec!r}): {err}") from err


def load_source(meta: dict[str, Any]) -> Any:
    """The data source a checkpoint was trained on: sampler.data.get_source(**meta["source"])."""
    spec = meta.get("source")
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint meta has no valid 'source' entry: {spec!r}")
    return get_source(**spec)
