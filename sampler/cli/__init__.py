"""The `mcd` command line.

Subcommands live in their own modules (sampler.cli.<name>; `verify` in proofs_checks.cli) and are imported only
when used, so `mcd --help` is fast.  Each module exposes `add_arguments(parser)` and `run`.

Fast errors: a module that names its back-end (`BACKEND`, a module path, e.g. "sampler.train.teacher") imports
no torch itself; it also exposes `check(args) -> config` (the config built and validated, the output path and
the resume rule checked) and `run(args, config, backend) -> int`.  The dispatcher parses, calls `check`, and
only then imports the back-end with importlib, so a bad argument is refused before torch or any science module
loads.  This importlib call is the one sanctioned deferred import of a project module (the layout rule
otherwise forbids imports inside functions: tests/test_layout_imports.py).  A module without `BACKEND` exposes
`run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._common import report_error

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("proofs_checks.cli", "check every claim of the duality (sympy + Monte Carlo) and write a report"),
    "train": ("sampler.cli.train", "train a masked diffusion teacher (MDLM continuous-time ELBO)"),
    "sample": ("sampler.cli.sample", "sample from a checkpoint (ancestral; noise-shared for a shadow student)"),
    "eval": ("sampler.cli.eval", "measure sample quality: exact NLL, entropy, ELBO, generative perplexity"),
    "distill": ("sampler.cli.distill", "masked consistency distillation of a teacher into a few-step student"),
    "bench-distill": ("sampler.cli.bench_distill", "distillation arms against the teacher and exact-denoiser frontiers, on two axes"),
    "bench-text": ("sampler.cli.bench_text", "the text benchmark: gen PPL at matched entropy, recall and cost of every sampler of a text teacher"),
    "fetch": ("sampler.cli.fetch", "download the Shakespeare corpus or the SmolLM2 evaluator into the cache directory"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help with its default written once: "(default: X)" is appended unless the help already
    states its default, the default is None (the help says what None means) or the option is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        flag = action.nargs == 0  # store_true / store_false / help / version
        if flag or not action.option_strings or action.default in (None, argparse.SUPPRESS) or "(default" in help_:
            return help_
        return f"{help_} (default: %(default)s)"


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `mcd NAME` (its module's add_arguments), without importing any back-end."""
    module_name, help_ = SUBCOMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"mcd {name}", description=help_, formatter_class=HelpFormatter)
    importlib.import_module(module_name).add_arguments(parser)
    return parser


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return argparse.ArgumentParser(
        prog="mcd",
        description="latent-shadows: the Gaussian-masked diffusion duality and masked consistency distillation.",
        epilog=f"subcommands:\n{lines}\n\n`mcd SUBCOMMAND --help` for the options of one.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="mcd [-h] SUBCOMMAND [options]",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        top.error(f"unknown subcommand {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = subcommand_parser(name)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:  # a bad argument (message already printed, naming it) or --help: its status
        return int(exit_.code or 0)
    backend_name = getattr(module, "BACKEND", None)
    if backend_name is None:
        return int(module.run(args) or 0)
    try:
        config = module.check(args)
    except ValueError as err:
        return report_error(name, err)
    return int(module.run(args, config, importlib.import_module(backend_name)) or 0)


if __name__ == "__main__":
    sys.exit(main())
