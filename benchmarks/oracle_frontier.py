"""The exact-denoiser (oracle) floor in the (precision, recall) plane, per step count and temperature.

    python benchmarks/oracle_frontier.py [--steps 64 16 8 4] [--temperatures 1.0 0.95 0.9 0.8]
        [--samples 512] [--heldout 128] [--k 4] [--seed 0] [--threads 1] [--out runs/oracle-frontier]

The embedded HMM source's own Bayes denoiser, sampled ancestrally (loglinear schedule), is the best any
per-token-independent sampler with exact marginals does at each step count.  For every (steps, T):
precision E_q[−log p]/L of `--samples` samples, recall (importance-weighted bound, k patterns) on
`--heldout` true sequences, bigram JS against the exact marginals (beside the value of as many true
sequences) and the KS typicality statistic, each ± SE.  Pairing: one sampler seed for every row (the
same uniforms at every temperature), one held-out set, and per step count one set of reveal patterns for
all temperatures; the Δ columns are paired differences against T = 1 at the same step count.
A sampler beats another only where it is no worse on both precision and recall, or lies strictly inside
the other's temperature curve, with fidelity and typicality no worse.

Prints a markdown table; writes OUT/oracle_frontier.{md,json,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sampler.data import get_source, paired_difference, strict_json
from sampler.quality.recall import mean_and_se, recall_per_sequence
from sampler.sampling import ancestral_sample
from sampler.quality.two_axis import two_axis_metrics
from theory import LogLinearSchedule


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 16, 8, 4])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.95, 0.9, 0.8])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=128)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/oracle-frontier")
    args = parser.parse_args()
    if 1.0 not in args.temperatures:
        parser.error("--temperatures must include 1.0 (the Δ columns are paired against it)")
    return args


def measure(args: argparse.Namespace, source: Any, heldout: Tensor) -> list[dict]:
    """One row per (steps, temperature), with per-sequence values kept for the paired differences."""
    denoiser, schedule, L = source.denoiser(), LogLinearSchedule(), source.default_seq_len
    rows = []
    for steps in args.steps:
        start = time.perf_counter()
        recall = recall_per_sequence(denoiser, schedule, heldout, steps=steps, temperatures=args.temperatures,
                                     k=args.k, generator=torch.Generator().manual_seed(20_000 + args.seed))
        recall_seconds = time.perf_counter() - start
        for index, temperature in enumerate(args.temperatures):
            start = time.perf_counter()
            samples = ancestral_sample(denoiser, schedule, num_steps=steps, num_samples=args.samples, seq_len=L, mask_id=source.vocab_size,
                                       vocab_size=source.vocab_size, generator=torch.Generator().manual_seed(args.seed),
                                       temperature=temperature, batch_size=128)
            metrics = two_axis_metrics(samples, source, ngram_orders=(2,), seed=args.seed, num_bootstrap=100)
            rows.append({"steps": steps, "temperature": temperature, "metrics": metrics,
                         "recall_per_sequence": recall[index], "seconds": time.perf_counter() - start,
                         "recall_seconds": recall_seconds})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """JSON-ready rows: values, SEs and paired Δ against T = 1 at the same step count."""
    base = {row["steps"]: row for row in rows if row["temperature"] == 1.0}
    out = []
    for row in rows:
        m, ref = row["metrics"], base[row["steps"]]
        recall, recall_se = mean_and_se(row["recall_per_sequence"], "recall")
        bigram = m["fidelity"][2]
        d_prec = paired_difference(m["precision"]["per_sequence"], ref["metrics"]["precision"]["per_sequence"])
        d_recall = paired_difference(row["recall_per_sequence"], ref["recall_per_sequence"])
        out.append({
            "steps": row["steps"], "temperature": row["temperature"],
            "precision": m["precision"]["value"], "precision_se": m["precision"]["se"],
            "recall": recall, "recall_se": recall_se,
            "d_precision": d_prec[0], "d_precision_se": d_prec[1], "d_recall": d_recall[0], "d_recall_se": d_recall[1],
            "bigram_js": bigram["js"], "bigram_js_se": bigram["js_se"], "bigram_js_true": bigram["reference_js"],
            "ks": m["typicality"]["ks"], "ks_se": m["typicality"]["ks_se"], "ks_p": m["typicality"]["p_value"],
            "unigram_entropy": m["precision"]["unigram_entropy"], "entropy_rate": m["precision"]["entropy_rate"],
            "sample_seconds": row["seconds"], "recall_seconds": row["recall_seconds"],
        })
    return out


def table(summary: list[dict], args: argparse.Namespace, heldout_nll: tuple[float, float]) -> str:
    lines = [
        f"Exact denoiser (oracle), loglinear schedule, {args.samples} samples (one sampler seed {args.seed}), "
        f"recall on {args.heldout} held-out sequences (true −log p/L {heldout_nll[0]:.4f} ± {heldout_nll[1]:.4f}), "
        f"k = {args.k}; entropy rate {summary[0]['entropy_rate']:.4f}. Δ: paired, against T = 1 at the same steps.",
        "",
        "| steps | T | precision | recall | Δ precision | Δ recall | bigram JS (true) | KS (p) | unigram H |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['steps']} | {r['temperature']:g} | {r['precision']:.4f} ± {r['precision_se']:.4f} "
            f"| {r['recall']:.4f} ± {r['recall_se']:.4f} | {r['d_precision']:+.4f} ± {r['d_precision_se']:.4f} "
            f"| {r['d_recall']:+.4f} ± {r['d_recall_se']:.4f} | {r['bigram_js']:.4f} ± {r['bigram_js_se']:.4f} "
            f"({r['bigram_js_true']:.4f}) | {r['ks']:.3f} ({r['ks_p']:.2g}) | {r['unigram_entropy']:.3f} |")
    lines += ["", "A sampler beats another only where it is no worse on both precision and recall (or lies strictly "
              "inside the other's temperature curve), with bigram JS and KS no worse."]
    return "\n".join(lines)


def plot(summary: list[dict], path: Path, heldout_nll: float, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for steps in sorted({r["steps"] for r in summary}, reverse=True):
        points = sorted((r for r in summary if r["steps"] == steps), key=lambda r: r["temperature"])
        ax.errorbar([r["precision"] for r in points], [r["recall"] for r in points],
                    xerr=[r["precision_se"] for r in points], yerr=[r["recall_se"] for r in points],
                    marker="o", capsize=2, label=f"{steps} steps")
        for r in points:
            ax.annotate(f"T={r['temperature']:g}", (r["precision"], r["recall"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 2))
    rate = summary[0]["entropy_rate"]
    ax.axvline(rate, color="grey", ls=":", lw=1, label="entropy rate")
    ax.axhline(heldout_nll, color="grey", ls="--", lw=1, label="held-out true NLL")
    ax.set_xlabel("precision: E_q[−log p]/L of samples (nats/token)")
    ax.set_ylabel(f"recall: held-out NLL bound (nats/token, k = {k})")
    ax.set_title("Exact-denoiser floor per step count (temperature sweep; SE bars)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    source = get_source("exact")
    heldout = source.sample_batch(args.heldout, source.default_seq_len, torch.Generator().manual_seed(10_000 + args.seed))
    rows = measure(args, source, heldout)
    heldout_nll = mean_and_se(-source.log_prob(heldout) / source.default_seq_len, "heldout_nll")
    summary = summarise(rows)
    text = table(summary, args, heldout_nll)
    print(text)
    print(f"\n{time.perf_counter() - start:.0f} s, threads={torch.get_num_threads()}")
    (out / "oracle_frontier.md").write_text(text + "\n")
    (out / "oracle_frontier.json").write_text(strict_json({"args": vars(args), "heldout_nll": heldout_nll,
                                                           "rows": summary}, indent=2))
    plot(summary, out / "oracle_frontier.png", heldout_nll[0], args.k)
    print(f"wrote {out}/oracle_frontier.{{md,json,png}}")


if __name__ == "__main__":
    main()
