"""`mcd verify`: run every claim of the duality (sympy + Monte Carlo) with its mutants and write
report.md, report.json and PNG plots.  Exit status 0 iff every claim passes and every mutant is
caught; 1 otherwise; 2 for bad arguments (e.g. --device cuda without a GPU).  The arguments and the output
directory are checked before the back-end (proofs_checks.backend: torch and the claims) is imported."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sampler.cli._common import add_seed_argument, add_threads_argument
from sampler.rundir import check_output_path


def _claim_list(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--claims must be comma-separated integers, got {text!r}") from err
    if not ids:
        raise argparse.ArgumentTypeError(f"--claims must name at least one claim, got {text!r}")
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="verify-report", help="output directory for report.md, report.json and plots (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small sample sizes (about 15 s of CPU; larger detectable discrepancies, reported)")
    add_seed_argument(parser, 0, "seed of every Monte Carlo draw (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the draws run (default: %(default)s)")
    parser.add_argument("--claims", type=_claim_list, default=None, help="only these claim ids, e.g. 1,3,5 (default: all)")
    parser.add_argument("--no-mutants", action="store_true", help="skip the planted-bug runs (the exit status then ignores mutants)")
    add_threads_argument(parser, 1)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


BACKEND = "proofs_checks.backend"  # imported by the dispatcher after `check`


def check(args: Any) -> Any:
    """The output directory checked writable (torch-free); ValueError naming --out otherwise."""
    return check_output_path(args.out, kind="dir", name="--out")


def run(args: Any, out: Any, backend: Any) -> int:
    try:
        backend.resolve_device(args.device)
    except ValueError as err:
        print(f"mcd verify: error: {err}", file=sys.stderr)
        return 2
    backend.apply_threads(args.threads)
    try:
        result = backend.run_suite(seed=args.seed, quick=args.quick, device=args.device, claim_ids=args.claims,
                                   with_mutants=not args.no_mutants, progress=not args.no_progress)
    except ValueError as err:
        print(f"mcd verify: error: {err}", file=sys.stderr)
        return 2
    paths = backend.write_report(result, args.out)
    failed = [c.claim.id for c in result.claims if not c.passed]
    survived = [m.mutant.name for m in result.mutants if not m.caught]
    print(f"{sum(c.passed for c in result.claims)}/{len(result.claims)} claims pass, "
          f"{backend.mutants_phrase(result)}, "
          f"{result.total_draws:,} draws, {result.seconds:.1f} s; report: {paths['markdown']}")
    if failed:
        print(f"failing claims: {failed}", file=sys.stderr)
    if survived:
        print(f"surviving mutants: {survived}", file=sys.stderr)
    return 0 if result.passed else 1
