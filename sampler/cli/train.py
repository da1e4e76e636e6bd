"""`mcd train`: arguments -> TrainConfig -> sampler.train.teacher.train (BACKEND, imported by the dispatcher only
once the arguments, the config and the output path are checked: an argument error costs no torch import)."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from ..configs import DEFAULT_MINUTES, MODEL_SIZES, OBJECTIVES, TrainConfig
from ._common import (
    STOPPED_BY_SIGNAL,
    check_run_config,
    report_error,
    add_optim_arguments,
    add_run_arguments,
    non_negative_int,
    optim_run_fields,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig(out="")
    parser.add_argument("--data", default=d.data, help="data source (sampler.data.get_source): 'exact' (embedded exact-likelihood "
                        "source), 'ngram:CORPUS' (exact n-gram chain fitted on CORPUS), 'text:CORPUS' or 'CORPUS' "
                        "(CORPUS: 'shakespeare' or a local text file/dir)")
    parser.add_argument("--data-seed", type=non_negative_int, default=d.data_seed, help="seed that builds the data source")
    parser.add_argument("--out", required=True, help="run directory (checkpoint.safetensors, config.json, metrics.jsonl)")
    parser.add_argument("--minutes", type=float, default=None, help=f"wall-clock budget in minutes (default: {DEFAULT_MINUTES:g} when --max-steps is absent too, else none)")
    parser.add_argument("--size", default=d.size, choices=MODEL_SIZES, help="model size preset: tiny (0.2 M parameters, the exact source on a CPU), cpu-text (0.8 M, "
                        "byte/character text on one core), mini (3 M), small (GPT-2 small body, GPU)")
    parser.add_argument("--objective", default=d.objective, choices=OBJECTIVES,
                        help="'mdlm': the masked diffusion teacher; 'ar': the autoregressive reference on the same backbone "
                             "(causal attention, next-token loss; its eval_elbo is the exact held-out NLL)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly where it stopped")
    parser.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: the source's)")
    parser.add_argument("--schedule", default=d.schedule, help="masked schedule registered in theory.schedules: loglinear, cosine, polynomial")
    parser.add_argument("--time-conditioning", action="store_true", help="condition the denoiser on t (disables the cached sampler)")
    parser.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability in the transformer")
    parser.add_argument("--eval-every", type=positive_int, default=d.eval_every, help="held-out ELBO every this many steps")
    add_optim_arguments(parser, d)
    add_run_arguments(parser, d)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        **optim_run_fields(args), data=args.data, data_seed=args.data_seed, seq_len=args.seq_len, size=args.size, objective=args.objective,
        time_conditioning=args.time_conditioning, dropout=args.dropout, schedule=args.schedule, minutes=args.minutes,
        eval_every=args.eval_every, resume=args.resume,
    )


def summary_text(config: TrainConfig, summary: dict[str, Any]) -> str:
    """The human summary of a finished (or stopped) teacher run: what was written, the held-out figure, the next commands."""
    out = shlex.quote(config.out)
    figure = "held-out next-token NLL" if config.objective == "ar" else "held-out ELBO (an upper bound on the NLL)"
    state = " (stopped by a signal; the same command with --resume continues it)" if summary["interrupted"] else ""
    lines = [
        f"trained into {config.out}: step {summary['step']} ({summary['steps_this_run']} this run, {summary['seconds']:.0f} s, "
        f"{summary['steps_per_s']:.1f} steps/s){state}",
        f"  {figure}: {summary['eval_elbo']:.4f} nats/token (EMA weights); last training loss {summary['final_loss']:.4f}",
        f"  written: {config.out}/checkpoint.safetensors, config.json, metrics.jsonl",
        f"  next: mcd sample --ckpt {out} --steps 64 --num 8",
    ]
    if config.objective != "ar":
        lines.append(f"        mcd distill --teacher {out} --out {shlex.quote(config.out.rstrip('/') + '-mcd')}")
    return "\n".join(lines)


BACKEND = "sampler.train.teacher"


def check(args: argparse.Namespace) -> TrainConfig:
    """The config of these arguments, validated with its output path and the resume rule (torch-free)."""
    return check_run_config(config_from_args(args))


def run(args: argparse.Namespace, config: TrainConfig, backend: Any) -> int:

    try:
        summary = backend.train(config)
    except (ValueError, FileNotFoundError) as err:
        return report_error("train", err)  # type: ignore[arg-type]
    if summary["rank"] == 0:
        print(json.dumps(summary, indent=2) if args.json else summary_text(config, summary))
    return STOPPED_BY_SIGNAL if summary["interrupted"] else 0
