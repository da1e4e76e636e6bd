"""Recall of the exact-denoiser sampler as a function of k: plain importance sampling against the particle filter.

    python benchmarks/recall_convergence.py [--steps 4 8] [--ks 1 4 16 64 256] [--heldout 32] [--seq-len 32]
        [--temperature 1.0] [--twist 0.5] [--proposal prior] [--resample-below 0.5] [--seed 0] [--threads 1]
        [--out runs/recall-convergence]

The embedded HMM source (`get_source("exact", seed=0)`) and its exact denoiser, loglinear schedule.  For each
step count and estimator (`sampler.quality.recall_convergence.recall_versus_k`: "plain" = k reveal patterns
from the sampler's law, grouped from one pool; "smc" = the particle filter of `sampler.quality.recall_smc`
with k particles, a fresh run per k): recall ± SE over the held-out sequences, the change from k/4 ± its
paired SE, the ESS diagnostic, the wall time of one estimate at that k, and the SMC − plain difference at
equal k (paired over sequences) with the wall-time ratio.  Both are upper bounds in expectation on the
sampler's −log q_N(x)/L, so lower is tighter.

Prints a markdown table; writes OUT/recall_convergence.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sampler.cli._common import add_threads_argument
from sampler.device import apply_threads
from sampler.data import get_source, json_ready
from sampler.quality.recall import mean_and_se
from sampler.quality.recall_convergence import format_recall_convergence, recall_versus_k
from theory import LogLinearSchedule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--heldout", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--twist", type=float, default=0.5)
    parser.add_argument("--proposal", choices=["prior", "adapted"], default="prior")
    parser.add_argument("--resample-below", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/recall-convergence")
    add_threads_argument(parser)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(held-out true NLL, one report per (steps, estimator))."""
    source = get_source("exact", seed=0, seq_len=args.seq_len)
    heldout = source.sample_batch(args.heldout, args.seq_len, torch.Generator().manual_seed(10_000 + args.seed))
    true_nll, true_se = mean_and_se(-source.log_prob(heldout) / args.seq_len, "heldout_nll")
    smc_options = {"twist": args.twist, "proposal": args.proposal, "resample_below": args.resample_below}
    reports = []
    for steps in args.steps:
        for estimator in ("plain", "smc"):
            report = recall_versus_k(source.denoiser(), LogLinearSchedule(), heldout, steps=steps, estimator=estimator,
                                     temperature=args.temperature, ks=args.ks, seed=args.seed,
                                     **(smc_options if estimator == "smc" else {}))
            print(f"{steps} steps: {format_recall_convergence(report)}", flush=True)
            reports.append(report)
    return {"heldout_nll": true_nll, "heldout_nll_se": true_se}, reports


def table(truth: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    """Markdown: one row per (steps, k), plain and SMC side by side, SMC − plain paired, time ratio."""
    lines = [f"True −log p(x)/L of the held-out sequences: {truth['heldout_nll']:.4f} ± {truth['heldout_nll_se']:.4f}",
             "", "| steps | k | plain recall | plain Δ(k/4→k) | plain ESS | plain s | SMC recall | SMC Δ(k/4→k) "
             "| SMC ESS | SMC s | SMC − plain | time SMC/plain |", "|" + "---|" * 12]
    by_key = {(r["steps"], r["estimator"]): r for r in reports}
    for steps in sorted({r["steps"] for r in reports}):
        plain, smc = by_key[(steps, "plain")], by_key[(steps, "smc")]
        for a, b in zip(plain["levels"], smc["levels"]):
            diff, diff_se = mean_and_se(b["per_sequence"] - a["per_sequence"], "difference")
            cells = [str(steps), str(a["k"])]
            for level in (a, b):
                cells += [f"{level['recall']:.4f} ± {level['recall_se']:.4f}",
                          "–" if level["change"] != level["change"] else f"{level['change']:+.4f} ± {level['change_se']:.4f}",
                          f"{level['ess']:.2f}", f"{level['seconds']:.1f}"]
            cells += [f"{diff:+.4f} ± {diff_se:.4f}", f"{b['seconds'] / max(a['seconds'], 1e-9):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    apply_threads(args.threads)
    truth, reports = measure(args)
    text = table(truth, reports)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recall_convergence.md").write_text(text + "\n")
    stored = [{key: value for key, value in report.items() if key != "per_sequence"} for report in reports]
    for report in stored:
        report["levels"] = [{**level, "per_sequence": level["per_sequence"].tolist()} for level in report["levels"]]
    (out / "recall_convergence.json").write_text(json.dumps(json_ready({"args": vars(args), **truth, "reports": stored}),
                                                            indent=2))


if __name__ == "__main__":
    main()
