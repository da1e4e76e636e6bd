"""`mcd distill`: arguments -> DistillConfig -> sampler.train.distill.distill (BACKEND, imported by the dispatcher
only once the arguments, the config and the output path are checked: an argument error costs no torch import)."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from ..configs import (
    COUPLINGS,
    METHODS,
    REFRESH_FROM,
    SHADOW_HEADS,
    SHADOW_TARGETS,
    DistillConfig,
    steps_from_dt,
    temperature_description,
)
from ..names import DIVERGENCES
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
    d = DistillConfig(teacher="", out="")
    parser.add_argument("--teacher", required=True, help="run directory of the teacher checkpoint")
    parser.add_argument("--out", required=True, help="run directory of the distilled student (an existing one needs --resume)")
    parser.add_argument("--method", choices=METHODS, default=d.method, help="mcd (analytic coupled pairs), baseline (stochastic SDTT) or shadow (noise-conditioned student)")
    parser.add_argument("--coupling", choices=COUPLINGS, default=d.coupling, help="how the per-token coupling noise is drawn")
    parser.add_argument("--divergence", choices=DIVERGENCES, default=d.divergence, help="divergence between the student and the teacher's target on still-masked tokens")
    parser.add_argument("--start-steps", type=positive_int, default=d.start_steps, help="N0: dt = 1/N0 in the first round")
    parser.add_argument("--start-dt", type=float, default=None, help="alternative to --start-steps: dt of the first round, 1/N0 (default: --start-steps decides)")
    parser.add_argument("--target-steps", type=positive_int, default=d.target_steps, help="sampling steps of the final student (N0/2^k)")
    parser.add_argument("--steps-per-round", type=positive_int, default=d.steps_per_round, help="optimiser steps per round")
    parser.add_argument("--refresh-from", choices=REFRESH_FROM, default=d.refresh_from, help="what the teacher is refreshed from each round")
    parser.add_argument("--paper-temperature", action="store_true",
                        help=f"sharpen the teacher each round with the paper's schedule T_r = max({d.temperature_floor:g}, "
                             f"{d.temperature_start:g} {d.temperature_step:+g}·r) (default: off, teacher temperature 1)")
    parser.add_argument("--no-temperature", action="store_true",
                        help="teacher temperature 1 in every round (the default; kept for existing scripts)")
    parser.add_argument("--temperature-start", type=float, default=None,
                        help=f"custom schedule: T of round 0 (turns the schedule on; default: {d.temperature_start:g})")
    parser.add_argument("--temperature-step", type=float, default=None,
                        help=f"custom schedule: added to T each round (turns the schedule on; default: {d.temperature_step:+g})")
    parser.add_argument("--temperature-floor", type=float, default=None,
                        help=f"custom schedule: the lowest T (turns the schedule on; default: {d.temperature_floor:g})")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (required when it holds one)")
    parser.add_argument("--shadow-target", choices=SHADOW_TARGETS, default=d.shadow_target,
                        help="--method shadow: soft = design A (teacher conditional at each token's reveal, forward KL); "
                             "hard = design B (cross-entropy to the rollout's endpoint, sampled by argmax)")
    parser.add_argument("--shadow-substeps", type=positive_int, default=d.shadow_substeps,
                        help="--method shadow: teacher rollout sub-steps per student step (N_teacher / N_student)")
    parser.add_argument("--no-shadow-draft", action="store_true", help="--method shadow: no provisional-value input")
    parser.add_argument("--shadow-head", choices=SHADOW_HEADS, default=d.shadow_head,
                        help="--method shadow: input = noise features added to the token embeddings (recall unavailable); "
                             "causal = an attention head reading only the noise of tokens revealed earlier (recall by a "
                             "sequential importance bound; with --shadow-target hard its argmax draw still has none)")
    parser.add_argument("--exact-teacher", action="store_true",
                        help="targets from the source's exact Bayes denoiser (the embedded 'exact' source only) instead of "
                             "the --teacher network, in every round and for every method; the student still starts from "
                             "--teacher's weights")
    parser.add_argument("--vocab-size", type=positive_int, default=None, help="refuse a teacher with another vocabulary size, in tokens (default: accept the teacher's)")
    parser.add_argument("--mask-id", type=non_negative_int, default=None, help="refuse a teacher with another mask id (default: accept the teacher's)")
    add_optim_arguments(parser, d)
    add_run_arguments(parser, d)


TEMPERATURE_FIELDS = ("temperature_start", "temperature_step", "temperature_floor")


def temperature_fields(args: argparse.Namespace) -> dict[str, Any]:
    """DistillConfig's temperature fields: on with --paper-temperature or any --temperature-*, whose values replace
    the paper's; ValueError when --no-temperature is combined with either."""
    custom = {name: getattr(args, name) for name in TEMPERATURE_FIELDS if getattr(args, name) is not None}
    enabled = args.paper_temperature or bool(custom)
    if enabled and args.no_temperature:
        raise ValueError("--no-temperature contradicts --paper-temperature / --temperature-*: give one or the other")
    return {"temperature": enabled, **custom}


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    start_steps = args.start_steps if args.start_dt is None else steps_from_dt(args.start_dt, "start_dt")
    return DistillConfig(
        **optim_run_fields(args), teacher=args.teacher, method=args.method, coupling=args.coupling,
        divergence=args.divergence, start_steps=start_steps, target_steps=args.target_steps,
        steps_per_round=args.steps_per_round, refresh_from=args.refresh_from, **temperature_fields(args), resume=args.resume, vocab_size=args.vocab_size, mask_id=args.mask_id,
        shadow_target=args.shadow_target, shadow_substeps=args.shadow_substeps, shadow_draft=not args.no_shadow_draft,
        shadow_head=args.shadow_head,
        exact_teacher=args.exact_teacher,
    )


def summary_text(config: DistillConfig, result: dict[str, Any]) -> str:
    """The human summary of a finished (or stopped) distillation: what was written, its cost, the next command."""
    counts = result["round_steps"]
    state = "" if result["complete"] else f" (stopped early at step {result['step']}; the same command with --resume continues it)"
    return (f"distilled ({config.method}) into {config.out}: {result['optimizer_steps']} optimiser steps over {len(counts)} "
            f"round(s), sampling steps {' → '.join(map(str, counts))}, {temperature_description(config, len(counts))}, "
            f"{result['teacher_forward_passes']} teacher forward passes, {result['wall_time_s']:.1f} s{state}\n"
            f"  written: {config.out}/checkpoint.safetensors (student, EMA, frozen teacher), {config.out}/metrics.jsonl\n"
            f"  next: mcd eval --ckpt {shlex.quote(config.out)} --steps {counts[-1]} --num 64 --elbo-num 64")


BACKEND = "sampler.train.distill"


def check(args: argparse.Namespace) -> DistillConfig:
    """The config of these arguments, validated with its output path and the resume rule (torch-free)."""
    return check_run_config(config_from_args(args))


def run(args: argparse.Namespace, config: DistillConfig, backend: Any) -> int:

    try:
        result = backend.distill(config)
        main = backend.is_main_process()
    except ValueError as err:
        return report_error("distill", err)
    finally:
        backend.ddp_cleanup()
    if main:
        print(json.dumps(result, indent=2) if args.json else summary_text(config, result))
    return STOPPED_BY_SIGNAL if result["interrupted"] else 0
