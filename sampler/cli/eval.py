"""`mcd eval`: arguments -> EvalConfig -> sampler.run.eval.evaluate_checkpoint (BACKEND, imported by the dispatcher
only once the arguments, the config and the output path are checked: an argument error costs no torch import)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from ..configs import DEFAULT_EVAL_STEPS, EvalConfig
from ..rundir import check_checkpoint_present, check_output_path
from ._common import add_inference_arguments, add_seed_argument, int_at_least, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="run directory written by `mcd train` (or its .safetensors file)")
    parser.add_argument("--steps", type=positive_int, nargs="+", default=DEFAULT_EVAL_STEPS, help="ancestral step counts")
    parser.add_argument("--num", type=int_at_least(2), default=256, help="samples per (temperature, steps)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                        help="sampling temperatures; several trace the NLL-entropy frontier")
    add_seed_argument(parser, 0, "sampler seed (shared by every row: paired)")
    parser.add_argument("--evaluator", default="auto",
                        help="generative-perplexity LM: 'smollm2', a HF model name/path or .gguf file, 'none'; "
                             "'auto' = smollm2 for real-text sources, none for exact sources")
    parser.add_argument("--elbo-num", type=positive_int, default=512, help="held-out sequences for the validation ELBO")
    parser.add_argument("--elbo-draws", type=positive_int, default=4, help="masking draws per held-out sequence")
    parser.add_argument("--oracle", action="store_true",
                        help="also sample with the source's exact denoiser (embedded source): the cost of few steps alone")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="the corpus of a text or n-gram run (as at training, e.g. text:corpus.txt): held-out text for "
                             "the validation ELBO, the n-gram likelihood; a path stored in the checkpoint is never read (default: none)")
    parser.add_argument("--recall-k", type=int, default=64,
                        help="largest k (reveal patterns per held-out sequence) of the recall estimate, a power of 4; "
                             "0: no recall")
    parser.add_argument("--recall-tolerance", type=float, default=0.01,
                        help="stop raising k once the remaining change (|change k/4 -> k| + 2 SE, nats/token) is at most this")
    parser.add_argument("--cost-repeats", type=positive_int, default=3,
                        help="timed one-thread draws per row (the median wall time per sample is reported)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--out", default=None, help="JSON report (default: RUN/eval-seed<seed>.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report at --out (default: refuse)")
    add_inference_arguments(parser)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(**{f.name: getattr(args, f.name) for f in fields(EvalConfig)})


BACKEND = "sampler.run.eval"  # evaluate_checkpoint, imported by the dispatcher after `check`


def check(args: argparse.Namespace) -> EvalConfig:
    """The config of these arguments, validated with its output path (torch-free); ValueError naming the argument."""
    config = config_from_args(args)
    config.validate()
    check_checkpoint_present(config.ckpt)
    check_output_path(config.output_file(), kind="file", name="--out", overwrite=args.overwrite)
    return config


def run(args: argparse.Namespace, config: EvalConfig, backend: Any) -> int:
    out = config.output_file()
    try:
        report = backend.evaluate_checkpoint(config, stream=sys.stdout, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"mcd eval: error: {err}", file=sys.stderr)
        return 2
    backend.write_json(out, report)
    print(f"wrote {out}")
    return 0
