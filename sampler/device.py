"""Devices: which device a command runs on, and how a network runs there.

- pick_device: "auto" -> cuda (this process's local rank under torchrun) when available, else cpu.
- autocast(device): bf16 autocast on CUDA, a no-op on CPU.
- autocast_denoiser(model, device): the model as a Denoiser called under autocast(device), float32 log-probs
  out, its `config` kept (the cached sampler reads it); the one wrapper every command that samples uses.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import Tensor

from theory.checks import check_int

from .protocols import Denoiser


def pick_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda (this process's local rank under torchrun) if available, else cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} asked for but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU (CPU bf16 is slower and changes results)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast_denoiser(model: Any, device: torch.device | str) -> Denoiser:
    """`model` as a Denoiser run under autocast(device): z, t -> model(z, t) as float32; `config` kept."""

    def denoiser(z: Tensor, t: Tensor) -> Tensor:
        with autocast(device):
            return model(z, t).float()

    denoiser.config = model.config
    return denoiser


def apply_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads); ValueError unless a positive int (None leaves torch's default)."""
    if threads is None:
        return
    check_int(threads, "threads", 1)
    torch.set_num_threads(threads)
