"""`mcd bench-distill`: arguments -> BenchConfig -> sampler.run.bench.bench (BACKEND, imported by the dispatcher only
once the arguments, the config's own settings and the output directory are checked: an argument error costs no
torch import)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..configs import BUILTIN_ARM_CUTS, COUPLINGS, BenchConfig
from ..rundir import check_checkpoint_present, check_output_path
from ._common import STOPPED_BY_SIGNAL, add_threads_argument, non_negative_int, positive_int


def _comma_list(kind: Any, what: str) -> Any:
    """An argparse `type`: "a,b,c" as a tuple of kind(a), kind(b), ...; an error naming `what` otherwise."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from err

    return parse


_int_list = _comma_list(int, "integers")
_float_list = _comma_list(float, "numbers")


def _seed_list(text: str) -> tuple[int, ...]:
    return tuple(non_negative_int(v) for v in text.split(",") if v.strip())


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, smoke = BenchConfig(), BenchConfig.smoke_config("")

    def both(field: str) -> str:
        """A field's default in words, and its --smoke value where that differs (read from the config: never stale)."""
        value, smoke_value = (",".join(map(str, v)) if isinstance(v, tuple) else "none" if v is None else str(v)
                              for v in (getattr(d, field), getattr(smoke, field)))
        return value if value == smoke_value else f"{value}; {smoke_value} with --smoke"

    parser.add_argument("--out", default=d.out, help="directory of the runs, tables and plots (cached runs are reused)")
    parser.add_argument("--smoke", action="store_true", help="a <2-minute end-to-end check (not the quality claims)")
    parser.add_argument("--teacher", default=None, help="reuse this teacher run instead of training OUT/teacher (default: train one)")
    parser.add_argument("--teacher-minutes", type=float, default=d.teacher_minutes, help="wall-clock minutes of the teacher's training")
    parser.add_argument("--teacher-steps", type=positive_int, default=None, help="train the teacher for this many optimiser steps instead of --teacher-minutes (default: the minutes decide)")
    parser.add_argument("--teacher-lr", type=float, default=d.teacher_lr, help="AdamW learning rate of the teacher's training")
    parser.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: the source's, 64)")
    parser.add_argument("--arms", type=_name_list, default=None,
                        help="comma list of arms (sampler.run.arms.ARMS): " + ", ".join(BUILTIN_ARM_CUTS) + f" (default {','.join(d.arms)}). "
                        "Measured on the shared 2-core machine, per run of 400 optimiser steps (64 -> 8, 100 a round): "
                        "mcd, mcd-noce, mcd-fkl 2.0-2.6 min, baseline 2.5-3.6, more-training 1.0, mcd-equal-compute "
                        "about 4.5 (2x batch, estimated); evaluation about 17 s per student at 64 steps and 2.2 min "
                        "per step count for the two temperature sweeps. The defaults (6 arms x 3 seeds, steps 64,16,8,4) "
                        "took 45 min of CPU on one thread with a cached teacher (2 703 s user; 1 h 55 min wall with four "
                        "other jobs on the two cores). shadow-soft, shadow-hard, shadow-causal, paper-shadow-* (not in "
                        "the default; the shadow student, designs A and B and A with the causal head: sampled by the "
                        "noise-shared sampler; recall only for the causal head, by its sequential bound) train with the "
                        "'uniform' coupling whatever --coupling, 2 teacher sub-steps a step.")
    parser.add_argument("--seeds", type=_seed_list, default=None, help=f"training seeds of every arm, e.g. 0,1,2 (default: {both('seeds')})")
    parser.add_argument("--start-steps", type=positive_int, default=d.start_steps, help="sampling steps of the first distillation round (N0)")
    parser.add_argument("--target-steps", type=positive_int, default=d.target_steps, help="sampling steps of the final students")
    parser.add_argument("--steps-per-round", type=positive_int, default=d.steps_per_round, help="optimiser steps per round of every arm")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="sequences per optimiser step of the students")
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate of the students")
    parser.add_argument("--divergence", default=d.divergence, choices=["reverse_kl", "forward_kl", "js"], help="divergence of the distilled arms that do not set their own")
    parser.add_argument("--temperature-schedule", action="store_true",
                        help="temper the teacher during distillation (0.96, 0.93, ...; off by default: it sharpens the students)")
    parser.add_argument("--coupling", default=d.coupling, choices=COUPLINGS,
                        help="coupling noise of the MCD and baseline arms (the shadow arms always use 'uniform')")
    parser.add_argument("--eval-steps", type=_int_list, default=None, help=f"sampling step counts (default: {both('eval_steps')})")
    parser.add_argument("--temperatures", type=_float_list, default=None,
                        help=f"temperatures of the teacher's and the oracle's sweeps at every step count, must hold 1.0 (default: {both('temperatures')})")
    parser.add_argument("--heldout", type=positive_int, default=None, help=f"held-out true sequences for recall (default: {both('heldout')})")
    parser.add_argument("--k", type=positive_int, default=None, help=f"reveal patterns per held-out sequence of the recall anchors and of arms with their own recall function (default: {both('k')})")
    parser.add_argument("--recall-k", type=positive_int, default=None,
                        help=f"largest k (reveal patterns per held-out sequence) of each row's recall estimate, a power of 4 (default: {both('recall_k')})")
    parser.add_argument("--recall-tolerance", type=float, default=None,
                        help=f"stop raising k once |change k/4 -> k| + 2 SE is at most this, nats/token (default: {both('recall_tolerance')})")
    parser.add_argument("--cost-repeats", type=positive_int, default=None,
                        help=f"timed one-thread draws per row; the median wall time per sample is reported (default: {both('cost_repeats')})")
    parser.add_argument("--ngram-orders", type=_int_list, default=None, help=f"n-gram fidelity orders, e.g. 1,2,3 (default: {both('ngram_orders')})")
    parser.add_argument("--bootstrap", type=positive_int, default=None, help=f"bootstrap replicates of the fidelity/KS SEs (default: {both('num_bootstrap')})")
    parser.add_argument("--anchors", action="store_true", help="also check the recall sanity anchors (always on with --smoke)")
    parser.add_argument("--samples", type=positive_int, default=None, help=f"samples per model and step count (default: {both('num_samples')})")
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(parser)


# options given as None keep the config's default (BenchConfig's, or smoke_config's with --smoke)
_OPTIONAL = {"arms": "arms", "seeds": "seeds", "temperatures": "temperatures", "heldout": "heldout", "k": "k",
             "ngram_orders": "ngram_orders", "bootstrap": "num_bootstrap", "eval_steps": "eval_steps", "samples": "num_samples",
             "recall_k": "recall_k", "recall_tolerance": "recall_tolerance", "cost_repeats": "cost_repeats"}


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    common = dict(
        out=args.out, teacher=args.teacher, divergence=args.divergence, coupling=args.coupling, device=args.device,
        progress=not args.no_progress, temperature=args.temperature_schedule,
        **{field: getattr(args, name) for name, field in _OPTIONAL.items() if getattr(args, name) is not None},
    )
    if args.smoke:
        return BenchConfig.smoke_config(**common)
    return BenchConfig(
        **common, teacher_minutes=None if args.teacher_steps else args.teacher_minutes, teacher_steps=args.teacher_steps,
        start_steps=args.start_steps, target_steps=args.target_steps, steps_per_round=args.steps_per_round,
        batch_size=args.batch_size, lr=args.lr, teacher_lr=args.teacher_lr, seq_len=args.seq_len, check_anchors=args.anchors,
    )


BACKEND = "sampler.run.bench"  # bench, imported by the dispatcher after `check`


def check(args: argparse.Namespace) -> BenchConfig:
    """The config of these arguments with its settings, --out and --teacher checked (torch-free); ValueError
    naming the argument.  The back-end adds the checks that need the teacher or torch (memory, n-gram orders)."""
    config = config_from_args(args)
    config.validate_settings()
    check_output_path(config.out, kind="dir", name="--out")
    if config.teacher is not None:
        check_checkpoint_present(config.teacher, "--teacher")
    return config


def run(args: argparse.Namespace, config: BenchConfig, backend: Any) -> int:
    backend.apply_threads(args.threads)
    argv = list(sys.argv[1:])
    if not argv or argv[0] != "bench-distill":
        argv = ["bench-distill", *argv]
    try:
        result = backend.bench(config, command="mcd " + " ".join(shlex.quote(a) for a in argv))
    except ValueError as err:
        print(f"mcd bench-distill: error: {err}", file=sys.stderr)
        return 2
    except backend.StoppedBySignal as stopped:
        print(f"mcd bench-distill: {stopped}", file=sys.stderr)
        return STOPPED_BY_SIGNAL
    print((Path(config.out) / "bench.md").read_text())
    print(f"written: {config.out}/bench.md, {config.out}/bench.json, " + ", ".join(result["plots"]))
    return 0
