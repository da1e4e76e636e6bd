"""Arguments shared by the subcommands: the OptimConfig and RunConfig fields, and `--threads`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ..train.config import OptimConfig, RunConfig


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = 1) -> None:
    parser.add_argument("--threads", type=int, default=default, help="CPU torch threads (torch.set_num_threads before any work)")


def apply_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads); ValueError unless a positive int (None leaves torch's default)."""
    import torch

    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)


def add_optim_arguments(parser: argparse.ArgumentParser, defaults: OptimConfig) -> None:
    """--lr --weight-decay --warmup --grad-clip --ema-decay, with the command's defaults."""
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay on matrices")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="linear warmup steps")
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="gradient norm clip")
    parser.add_argument("--ema-decay", "--ema", dest="ema_decay", type=float, default=defaults.ema_decay, help="EMA decay")


def add_run_arguments(parser: argparse.ArgumentParser, defaults: RunConfig) -> None:
    """--seed --device --threads --batch-size --save-every --log-every --max-steps --compile --no-progress."""
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    add_threads_argument(parser, defaults.threads)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--save-every", type=int, default=defaults.save_every, help="checkpoint every this many steps")
    parser.add_argument("--log-every", type=int, default=defaults.log_every, help="metrics record every this many steps")
    parser.add_argument("--max-steps", "--steps", dest="max_steps", type=int, default=defaults.max_steps,
                        help="total optimiser steps (a resumed run continues up to it)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def optim_run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The OptimConfig and RunConfig fields from parsed arguments (progress = not --no-progress)."""
    names = {f.name for f in fields(OptimConfig)} | {f.name for f in fields(RunConfig)}
    values = {name: getattr(args, name) for name in names if name != "progress"}
    return {**values, "progress": not args.no_progress}
