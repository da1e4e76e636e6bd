"""Arguments shared by the subcommands: the OptimConfig and RunConfig fields, `--threads`, and the one
validator of integer arguments (`int_at_least`), so `--seed -1`, `--threads 0` or `--seq-len 0` are refused
by name in every subcommand before any work."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from theory.checks import check_seed

from ..configs import InferenceConfig, OptimConfig, ResumeRequiredError, RunConfig, check_resume
from ..names import CHECKPOINT_FILE
from ..rundir import check_output_path

# Exit status of a training command that a stop signal (Ctrl-C, SIGTERM) ended after saving its checkpoint:
# 128 + SIGINT, as a shell reports a Ctrl-C, so that `mcd distill ... && next` does not go on.
STOPPED_BY_SIGNAL = 130


def int_at_least(minimum: int) -> Any:
    """An argparse `type`: the argument as an int >= minimum, or an error naming the argument (argparse adds
    the name) and the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = 1) -> None:
    parser.add_argument("--threads", type=positive_int, default=default, help="CPU torch threads (torch.set_num_threads before any work)")


def seed_argument(text: str) -> int:
    """An argparse `type`: a seed by the library's rule (sampler.sampling.check_seed: an integer in 0..2**63 - 1)."""
    try:
        return check_seed(int(text), "it")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63 - 1, got {text!r}") from None


seed_argument.__name__ = "seed"


def add_seed_argument(parser: argparse.ArgumentParser, default: int | None = 0, help: str = "random seed") -> None:
    parser.add_argument("--seed", type=seed_argument, default=default, help=help)


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """--device --batch-size --no-ema --no-cache --threads: the InferenceConfig fields of `mcd sample` and `mcd eval`."""
    defaults = InferenceConfig(ckpt="")
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="sequences per sampler batch")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--no-cache", action="store_true", help="call the network at every step")
    add_threads_argument(parser, defaults.threads)


def add_optim_arguments(parser: argparse.ArgumentParser, defaults: OptimConfig) -> None:
    """--lr --weight-decay --warmup --grad-clip --ema-decay, with the command's defaults."""
    parser.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak learning rate (after the linear warmup)")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay on matrices")
    parser.add_argument("--warmup", type=non_negative_int, default=defaults.warmup, help="linear warmup, in optimiser steps")
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="clip of the gradient's global L2 norm")
    parser.add_argument("--ema-decay", "--ema", dest="ema_decay", type=float, default=defaults.ema_decay, help="decay of the exponential moving average of the weights (per step)")


def add_run_arguments(parser: argparse.ArgumentParser, defaults: RunConfig) -> None:
    """--seed --device --threads --batch-size --save-every --log-every --max-steps --compile --no-progress --allow-changed."""
    add_seed_argument(parser, defaults.seed, "training seed (default: the run's recorded seed when resuming, else 0)")
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    add_threads_argument(parser, defaults.threads)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="sequences per optimiser step")
    parser.add_argument("--save-every", type=positive_int, default=defaults.save_every, help="checkpoint every this many optimiser steps")
    parser.add_argument("--log-every", type=positive_int, default=defaults.log_every, help="metrics record every this many optimiser steps")
    parser.add_argument("--max-steps", "--steps", dest="max_steps", type=non_negative_int, default=defaults.max_steps,
                        help="total optimiser steps, a resumed run continues up to it (default: mcd train stops at its time budget, mcd distill after its last round)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only: refused on the CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the run's summary as JSON instead of the human summary")
    allowed = sorted(defaults.overridable)
    parser.add_argument("--allow-changed", action="append", default=None, metavar="FIELD", choices=allowed,
                        help=f"on a resume, accept a changed value of FIELD, one of {', '.join(allowed)} "
                             "(repeatable; recorded in the run's meta['resumes'], its config stays as started; default: none"
                             + ("; steps_per_round only for a one-round run" if "steps_per_round" in allowed else "") + ")")


def optim_run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The OptimConfig and RunConfig fields from parsed arguments (progress = not --no-progress)."""
    names = {f.name for f in fields(OptimConfig)} | {f.name for f in fields(RunConfig)}
    values = {name: getattr(args, name) for name in names if name not in ("progress", "allow_changed")}
    return {**values, "progress": not args.no_progress, "allow_changed": tuple(args.allow_changed or ())}


def check_run_config(config: Any) -> Any:
    """A training command's config validated, with its output directory and the resume rule checked (torch-free:
    the dispatcher calls it before it imports the back-end); returns it."""
    config.validate()
    out = check_output_path(config.out, kind="dir", name="--out")
    check_resume(config.out, (out / CHECKPOINT_FILE).exists(), config.resume)
    return config


def report_error(command: str, err: ValueError) -> int:
    """Print `mcd COMMAND: error: ...` (a resume error in its command-line spelling, --resume) and return 2."""
    print(f"mcd {command}: error: {err.cli_message if isinstance(err, ResumeRequiredError) else err}", file=sys.stderr)
    return 2
