"""`mcd bench-text`: arguments -> TextBenchConfig -> sampler.run.text_bench.text_bench (BACKEND, imported by the
dispatcher only once the arguments, the paths and the evaluator's name are checked: an argument error costs no
torch import)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..configs import RECALL_ESTIMATORS, TextBenchConfig
from ..rundir import check_output_path
from ._common import add_seed_argument, add_threads_argument, positive_int, report_error

# Measured on one thread of the shared 2-core machine with the 0.8 M-parameter byte-level teacher at L = 128
# (cpu-text, Shakespeare) and a dequantised SmolLM2 evaluator: `--steps 64 16 4 --confidence-steps 16 4 --num 16
# --temperatures 0.8 1.0 --recall-num 8 --recall-ks 1 4` took 967 s.  Both samplers make at most min(steps, L)
# network passes a sample (steps that reveal nothing are skipped); the defaults ask about 27 times the sampling
# passes of that run (6 + 6 rows, 64 samples, 3 temperatures) and about 75 times its recall passes (k up to 16
# on 16 sequences), so they are a matter of hours on one CPU thread.
COST_NOTE = ("Cost: with every default this is a long run (hours on one CPU thread for a 0.8 M-parameter byte-level "
             "teacher at L = 128, estimated; the 1024- and 256-step rows and the recall at k = 16 dominate). "
             "Measured there: --steps 64 16 4 --confidence-steps 16 4 --num 16 --temperatures 0.8 1.0 --recall-num 8 "
             "--recall-ks 1 4 took 16 minutes. Use a GPU (--device cuda) or cut --steps, --num, --recall-ks, "
             "--recall-max-steps. The smollm2 evaluator takes about 80 s to load the first time (later loads read its "
             "cached dequantised copy).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TextBenchConfig()
    parser.description = (parser.description or "") + ". " + COST_NOTE
    parser.add_argument("--teacher", default=None, help="the text teacher's run directory (mcd train); required unless --smoke (default: none; --smoke trains a tiny one)")
    parser.add_argument("--ar", default=None, help="the autoregressive reference's run directory (mcd train --objective ar; default: no AR row)")
    parser.add_argument("--student", dest="students", action="append", default=None, metavar="RUN[:STEPS]",
                        help="a distilled student (any checkpoint kind: MCD, baseline, shadow), sampled at STEPS "
                             "or, without :STEPS, at the target steps in its config.json; repeatable (default: no student rows)")
    parser.add_argument("--data", default=None, help="the corpus spec the teacher was trained on, e.g. shakespeare or "
                        "text:PATH?tokenizer=byte; its split 'valid' is the held-out text (required unless --smoke; default: none; --smoke writes a tiny corpus)")
    parser.add_argument("--evaluator", default=d.evaluator, help="evaluator LM: smollm2 (downloaded once, ~93 MB), a local "
                        ".gguf file or a local Hugging Face directory")
    parser.add_argument("--steps", type=positive_int, nargs="*", default=list(d.steps),
                        help="the teacher's ancestral step counts; none: no ancestral rows (1024 and 256 are the costly ones)")
    parser.add_argument("--confidence-steps", type=positive_int, nargs="*", default=None,
                        help="the confidence-ordered sampler's step counts (default: --steps; none: no confidence rows)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(d.temperatures),
                        help="sampling temperatures of every row; gen PPL is interpolated between them at the held-out entropy")
    parser.add_argument("--num", type=positive_int, default=d.num, help="samples per row and temperature (one batch)")
    parser.add_argument("--recall-temperature", type=float, default=d.recall_temperature, help="the temperature at which recall is measured")
    parser.add_argument("--recall-num", type=positive_int, default=d.recall_num, help="held-out sequences for recall")
    parser.add_argument("--recall-ks", type=positive_int, nargs="+", default=list(d.recall_ks),
                        help="reveal patterns k of the recall bound, each 4 times the one before")
    parser.add_argument("--recall-estimator", choices=RECALL_ESTIMATORS, default=d.recall_estimator, help="recall bound's estimator")
    parser.add_argument("--recall-max-steps", type=positive_int, default=None,
                        help="skip the reveal-pattern recall of ancestral rows above this many steps (default: none skipped)")
    parser.add_argument("--heldout-num", type=positive_int, default=d.heldout_num, help="held-out windows for the n-gram law and the target entropy")
    parser.add_argument("--nll-num", type=positive_int, default=d.nll_num, help="held-out windows for both models' held-out NLL")
    parser.add_argument("--bootstrap", type=positive_int, default=d.bootstrap, help="bootstrap replicates of the n-gram fidelity's standard errors")
    parser.add_argument("--include", action="append", default=None, metavar="JSON",
                        help="rows of an earlier text_bench.json measured the same way (data, evaluator, seed, --num, "
                             "held-out sample), added before the table and plots: a bench run in parts (default: none)")
    add_seed_argument(parser, d.seed, "sampler and held-out seed")
    add_threads_argument(parser)
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N (the runs and the evaluator)")
    parser.add_argument("--smoke", action="store_true",
                        help="offline check of the whole path in under a minute: a tiny corpus, teacher, AR model, student "
                             "and random evaluator made in a temporary directory (no download; the figures mean nothing)")
    parser.add_argument("--out", default=d.out, help="directory of text_bench.{md,json} and the plots")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the human summary")


def config_from_args(args: argparse.Namespace) -> TextBenchConfig:
    return TextBenchConfig(
        teacher=args.teacher, ar=args.ar, students=tuple(args.students or ()), data=args.data, evaluator=args.evaluator,
        steps=tuple(args.steps), confidence_steps=None if args.confidence_steps is None else tuple(args.confidence_steps),
        temperatures=tuple(args.temperatures), num=args.num, recall_temperature=args.recall_temperature,
        recall_num=args.recall_num, recall_ks=tuple(args.recall_ks), recall_estimator=args.recall_estimator,
        recall_max_steps=args.recall_max_steps, heldout_num=args.heldout_num, nll_num=args.nll_num, bootstrap=args.bootstrap, seed=args.seed,
        threads=args.threads, device=args.device, include=tuple(args.include or ()), smoke=args.smoke, out=args.out,
    )


BACKEND = "sampler.run.text_bench"


def check(args: argparse.Namespace) -> TextBenchConfig:
    """The config of these arguments, validated with its output path (torch-free)."""
    config = config_from_args(args).validate()
    check_output_path(config.out, kind="dir", name="--out")
    return config


def summary_text(report: dict[str, Any]) -> str:
    """What was written, the key figure (gen PPL per character at matched entropy of each row, beside held-out
    text's own), and the next command."""
    heldout = next(row for row in report["rows"] if row["sampler"] == "heldout")
    lines = [f"bench-text on {report['source'].get('spec')} (L = {report['seq_len']}), evaluator {report['evaluator']}"
             + (" [smoke: tiny random models, the figures mean nothing]" if report.get("smoke") else "")
             + f"; {report['wall_seconds']:.0f} s",
             f"  gen PPL per character at matched entropy ({report['target_entropy']['value']:.3f} nats); "
             f"held-out text itself {heldout['gen_ppl_char']:.2f}:"]
    for m in sorted(report["matched"], key=lambda m: (m["sampler"], -(m["steps"] or 0))):
        lines.append(f"    {m['sampler']:<28} {m['steps']!s:>5} steps  {m['gen_ppl_char']:8.2f}"
                     f"{'' if m['in_range'] else ' (extrapolated)'}  {m['cost']['sequence_equivalents']:7.1f} seq. equiv.")
    lines += [f"  written: {', '.join(report['written'])}",
              f"  next: read {report['written'][0]} (tables, recall, decoded samples of each row)"]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    """The `mcd bench-text` command of these arguments: every option whose value differs from its default, in the
    order of --help (written into the report; the same whether the command came from a shell or from `main(argv)`)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["mcd", "bench-text"]
    for action in parser._actions:
        value, flag = getattr(args, action.dest), action.option_strings[0]
        if value == action.default:
            continue
        if action.nargs == 0:
            words.append(flag)
        elif action.nargs in ("*", "+"):
            words += [flag, *map(str, value)]
        elif isinstance(value, list):  # a repeatable option
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(word) for word in words)


def run(args: argparse.Namespace, config: TextBenchConfig, backend: Any) -> int:
    try:
        report = backend.text_bench(config, command=command_line(args))
    except (ValueError, FileNotFoundError) as err:
        return report_error("bench-text", err)  # type: ignore[arg-type]
    print(backend.strict_json(report, indent=1) if args.json else summary_text(report))
    return 0
