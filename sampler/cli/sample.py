"""`mcd sample`: draw sequences from a teacher checkpoint with the ancestral sampler.

    mcd sample --ckpt RUN --steps N --num M [--temperature T] [--prefix TEXT | --prefix-ids 3,1,4]
               [--seed S] [--out FILE.jsonl]

Writes one JSON object per sample ({"index", "ids", "text"}) to --out (default
RUN/samples-<steps>steps-seed<seed>.jsonl) and prints the throughput in tokens/s.
The cached sampler (skip the network for sequences no step changed) is used whenever the
model has no time conditioning; its output equals the uncached sampler's for the same seed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from ..configs import SampleConfig
from ..rundir import check_checkpoint_present, check_output_path
from ._common import add_inference_arguments, add_seed_argument, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="run directory written by `mcd train` (or its .safetensors file)")
    parser.add_argument("--steps", type=positive_int, default=256, help="number of ancestral steps (uniform time grid, built step by step: memory does not grow with it, time grows linearly)")
    parser.add_argument("--num", type=positive_int, default=16, help="number of sequences")
    parser.add_argument("--seq-len", type=positive_int, default=None, help="length (default: the model's)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1 = the model's own distribution)")
    parser.add_argument("--final-greedy", action="store_true", help="argmax instead of a draw in the last step")
    parser.add_argument("--prefix", default=None, help="text prompt, encoded with the source's tokenizer (default: none)")
    parser.add_argument("--prefix-ids", default=None, help="prompt as token ids, e.g. '3,1,4' (default: none)")
    add_seed_argument(parser, 0, "sampler seed")
    parser.add_argument("--out", default=None, help="JSONL output (default: RUN/samples-<steps>steps-seed<seed>.jsonl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing samples file at --out (default: refuse)")
    add_inference_arguments(parser)


def config_from_args(args: argparse.Namespace) -> SampleConfig:
    return SampleConfig(**{f.name: getattr(args, f.name) for f in fields(SampleConfig)})


BACKEND = "sampler.run.sample"  # sample_from_checkpoint, imported by the dispatcher after `check`


def check(args: argparse.Namespace) -> SampleConfig:
    """The config of these arguments; ValueError naming the argument for a bad temperature or two prompts (torch-free)."""
    config = config_from_args(args)
    if not (config.temperature > 0 and config.temperature != float("inf")):
        raise ValueError(f"--temperature must be a positive finite number, got {config.temperature}")
    if config.prefix is not None and config.prefix_ids is not None:
        raise ValueError("give --prefix or --prefix-ids, not both")
    check_checkpoint_present(config.ckpt)
    check_output_path(config.output_file(), kind="file", name="--out", overwrite=args.overwrite)
    return config


def run(args: argparse.Namespace, config: SampleConfig, backend: Any) -> int:
    try:
        result = backend.sample_from_checkpoint(config)
    except (ValueError, FileNotFoundError) as err:  # CheckpointError is a ValueError
        print(f"mcd sample: error: {err}", file=sys.stderr)
        return 2
    source = result["source"]
    as_text = source is not None and getattr(source, "decodes_to_text", True)
    if not as_text:
        print("token ids (this source has no text behind its tokens" +
              (": the embedded hidden Markov source)" if source is not None else ")"))
    for row in result["samples"][:3]:
        print(source.decode(row) if as_text else " ".join(map(str, row.tolist())))
    print(
        f"wrote {result['num']} samples x {result['seq_len']} tokens ({result['steps']} steps) to {result['out']}; "
        f"{result['tokens_per_s']:.0f} tokens/s"
    )
    return 0


