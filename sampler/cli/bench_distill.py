"""`mcd bench-distill`: arguments -> BenchConfig -> sampler.bench_distill.bench."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


from ..bench_distill import BenchConfig
from ._common import add_threads_argument, non_negative_int, positive_int


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _seed_list(text: str) -> tuple[int, ...]:
    return tuple(non_negative_int(v) for v in text.split(",") if v.strip())


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    parser.add_argument("--out", default=d.out, help="directory of the runs, tables and plots (cached runs are reused)")
    parser.add_argument("--smoke", action="store_true", help="a <2-minute end-to-end check (not the quality claims)")
    parser.add_argument("--teacher", default=None, help="reuse this teacher run instead of training OUT/teacher")
    parser.add_argument("--teacher-minutes", type=float, default=d.teacher_minutes)
    parser.add_argument("--teacher-steps", type=positive_int, default=None, help="train the teacher for this many steps (instead of --teacher-minutes)")
    parser.add_argument("--teacher-lr", type=float, default=d.teacher_lr)
    parser.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: the source's, 64)")
    parser.add_argument("--seeds", type=_seed_list, default=d.seeds, help="training seeds of the students, e.g. 0,1")
    parser.add_argument("--start-steps", type=positive_int, default=d.start_steps)
    parser.add_argument("--target-steps", type=positive_int, default=d.target_steps)
    parser.add_argument("--steps-per-round", type=positive_int, default=d.steps_per_round)
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--divergence", default=d.divergence, choices=["reverse_kl", "forward_kl", "js"])
    parser.add_argument("--no-temperature", action="store_true", help="teacher temperature 1 in every round")
    parser.add_argument("--coupling", default=d.coupling, choices=["threshold", "gaussian", "uniform"])
    parser.add_argument("--eval-steps", type=_int_list, default=None, help="sampling step counts (default 1024,256,64,16,8,4)")
    parser.add_argument("--frontier-temperatures", type=_float_list, default=d.frontier_temperatures)
    parser.add_argument("--samples", type=positive_int, default=None, help="samples per model and step count")
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--no-progress", action="store_true")
    add_threads_argument(parser)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    common = dict(
        out=args.out, teacher=args.teacher, seeds=args.seeds, divergence=args.divergence, temperature=not args.no_temperature,
        coupling=args.coupling, device=args.device, progress=not args.no_progress,
    )
    if args.smoke:
        config = BenchConfig.smoke_config(**common)
    else:
        config = BenchConfig(
            **common, teacher_minutes=None if args.teacher_steps else args.teacher_minutes, teacher_steps=args.teacher_steps,
            start_steps=args.start_steps, target_steps=args.target_steps, steps_per_round=args.steps_per_round,
            batch_size=args.batch_size, lr=args.lr, frontier_temperatures=args.frontier_temperatures,
            teacher_lr=args.teacher_lr, seq_len=args.seq_len,
        )
        if args.eval_steps:
            config.eval_steps = args.eval_steps
            config.frontier_steps = tuple(s for s in (16, 8, 4) if s in args.eval_steps)
    if args.samples is not None:
        config.num_samples = args.samples
    return config


def run(args: argparse.Namespace) -> int:
    from ..bench_distill import bench
    from ._common import apply_threads

    apply_threads(args.threads)
    config = config_from_args(args)
    argv = list(sys.argv[1:])
    if not argv or argv[0] != "bench-distill":
        argv = ["bench-distill", *argv]
    try:
        result = bench(config, command="mcd " + " ".join(shlex.quote(a) for a in argv))
    except ValueError as err:
        print(f"mcd bench-distill: error: {err}", file=sys.stderr)
        return 2
    print((Path(config.out) / "bench.md").read_text())
    print(f"written: {config.out}/bench.md, {config.out}/bench.json, " + ", ".join(result["plots"]))
    return 0
