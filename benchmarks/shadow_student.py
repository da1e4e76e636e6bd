"""Experiment: a 4-step shadow student against the teacher (and MCD) at 4 steps, with the noise ablations.

Rows, all from sampler seed `--seed` (`--num` sequences each):
- teacher, ancestral:      the teacher checkpoint by the plain ancestral sampler;
- teacher, noise-shared:   the teacher by the noise-shared sampler on the shadow noise of the seed (equal in
                           law to the row above; the paired baseline of the student rows, same noise);
- teacher, 16 steps, noise-shared: the rollout the student was distilled from (when --rollout-steps is given);
- shadow student:          the student by the noise-shared sampler on the same noise;
- shadow, noise zeroed:    the student with its noise input off (its base network: per-token marginals);
- shadow, fresh uniform:   the student's noise features read an independent category noise, the draw the true c;
- exact denoiser, noise-shared: with --oracle, the source's exact Bayes denoiser on the same noise: the best
                           per-token-independent sampler (the factorisation floor), strongly paired; also at
                           each of --oracle-temperatures (the floor's temperature frontier);
- MCD student, ancestral:  when --mcd is given;
- baseline student, ancestral: when --baseline is given (a `mcd distill --method baseline` run).

Metrics (sampler.quality.two_axis_metrics, one seed for every row so references and bootstrap streams are
shared): precision (NLL per token under the true source, ± SE), n-gram fidelity (JS of unigrams and
bigrams, bootstrap SE), typicality (KS ± bootstrap SE); recall (k = 4 draws, as many held-out sequences
as samples): the reveal-pattern bound for the per-token-independent samplers (the teacher's ancestral row,
MCD, the baseline, and the student with its noise zeroed: its base network), the sequential importance bound
(`sampler.shadow.recall`) for a causal-head student; an input-head student's noise-conditioned law
is intractable, so its recall is marked unavailable with the reason (as for the fresh-noise ablation).
Paired precision differences against the teacher's noise-shared row (same noise: strongly paired) and
against its ancestral row (same seed). "ΔR vs T-curve": a row's recall minus that of the exact denoiser's
temperature curve at the row's precision (`sampler.quality.compare.paired_frontier_gap`, paired SE); < 0 means
strictly inside the factorisation floor's curve; "beyond curve" when no two measured temperatures bracket the
row's precision (give --oracle-temperatures on both sides of 1).

    python benchmarks/shadow_student.py --teacher /work/runs/teacher --student runs/shadow4 [--mcd runs/mcd4]
        [--baseline runs/baseline4]
        [--steps 4] [--rollout-steps 16] [--num 512] [--seed 0] [--out runs/shadow4/experiment.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sampler.checkpoint import load_source
from sampler.run.open import open_run
from sampler.data import json_ready, paired_difference, strict_json
from sampler.protocols import reads_shadow_noise
from sampler.quality.compare import paired_frontier_gap
from sampler.quality.two_axis import two_axis_metrics
from sampler.sampling import ancestral_sample
from sampler.shadow.student import set_ablation, shadow_sample


PAIRED_REFERENCES = ("teacher, noise-shared", "teacher, ancestral", "exact denoiser, noise-shared")


def _row(name: str, samples: torch.Tensor, seconds: float, source: Any, seed: int, recall_of: Any = None,
         schedule: Any = None, steps: int | None = None, temperature: float = 1.0) -> dict[str, Any]:
    metrics = two_axis_metrics(samples, source, denoiser=recall_of, schedule=schedule if recall_of is not None else None,
                               steps=steps if recall_of is not None else None, temperature=temperature,
                               ngram_orders=(1, 2), seed=seed)
    if recall_of is None:
        metrics["unavailable"]["recall"] = "not computed"
    return {"name": name, "seconds": seconds, "tokens_per_s": samples.numel() / max(seconds, 1e-9), **metrics}


def _timed(fn: Any) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    opened_teacher = open_run(args.teacher, "cpu", threads=args.threads)
    teacher, meta, schedule, device = opened_teacher.model, opened_teacher.meta, opened_teacher.schedule, opened_teacher.device
    opened_student = open_run(args.student, "cpu", threads=args.threads)
    student, student_meta = opened_student.model, opened_student.meta
    if not reads_shadow_noise(student):
        raise ValueError(f"student={args.student!r} is not a shadow student checkpoint")
    source = load_source(meta)
    config = teacher.config
    L, K, mask = config.seq_len, config.vocab_size, config.mask_id

    def plain(model: Any, steps: int) -> torch.Tensor:
        return ancestral_sample(lambda z, t: model(z, t), schedule, num_steps=steps, num_samples=args.num, seq_len=L, mask_id=mask, vocab_size=K,
                                generator=torch.Generator().manual_seed(args.seed))

    def shared(model: Any, steps: int, temperature: float = 1.0) -> torch.Tensor:
        return shadow_sample(model, schedule, num_steps=steps, num_samples=args.num, seq_len=L, seed=args.seed, temperature=temperature, method=student.reveal_method)

    rows = []

    def add(name: str, fn: Any, recall_of: Any = None, steps: int = args.steps, temperature: float = 1.0) -> None:
        samples, seconds = _timed(fn)
        rows.append(_row(name, samples, seconds, source, args.seed, recall_of, schedule, steps, temperature))
        print(f"{name}: precision {rows[-1]['precision']['value']:.4f} ± {rows[-1]['precision']['se']:.4f} "
              f"({seconds:.1f} s)", file=sys.stderr, flush=True)

    add("teacher, ancestral", lambda: plain(teacher, args.steps), recall_of=teacher)
    add("teacher, noise-shared", lambda: shared(teacher, args.steps))
    if args.rollout_steps:
        add(f"teacher, {args.rollout_steps} steps, noise-shared", lambda: shared(teacher, args.rollout_steps),
            recall_of=teacher, steps=args.rollout_steps)  # recall: the noise-shared law is the ancestral one
    for ablation, name in (("none", "shadow student"), ("zero", "shadow, noise zeroed"), ("fresh", "shadow, fresh uniform")):
        set_ablation(student, ablation, seed=args.seed + 7919)
        # noise zeroed: the base network, per-token independent (the noise-shared law is the ancestral one)
        add(name, lambda: shared(student, args.steps), recall_of=student.base if ablation == "zero" else student)
    set_ablation(student, "none")
    if args.oracle:
        exact = source.denoiser(mask)
        exact.config = config  # shadow_sample reads the vocabulary and mask id from it
        # recall: a noise-ignoring denoiser's noise-shared law is the ancestral one (mcd verify, claim 12)
        add("exact denoiser, noise-shared", lambda: shared(exact, args.steps), recall_of=exact)
        for temperature in args.oracle_temperatures:
            add(f"exact denoiser, T={temperature:g}, noise-shared", lambda: shared(exact, args.steps, temperature),
                recall_of=exact, temperature=temperature)
    for run_dir, name in ((args.mcd, "MCD student, ancestral"), (args.baseline, "baseline student, ancestral")):
        if run_dir:
            other = open_run(run_dir, "cpu", threads=args.threads).model
            add(name, lambda: plain(other, args.steps), recall_of=other)
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        row["paired"] = {}
        for reference in PAIRED_REFERENCES:
            if reference not in by_name:
                continue
            mean, se = paired_difference(row["precision"]["per_sequence"], by_name[reference]["precision"]["per_sequence"])
            row["paired"][reference] = {"mean": mean, "se": se}
            if row["recall"] and by_name[reference]["recall"]:  # one held-out set per seed: paired
                mean, se = paired_difference(row["recall"]["per_sequence"], by_name[reference]["recall"]["per_sequence"])
                row["paired"][reference].update(recall_mean=mean, recall_se=se)
    floor_curve_gaps(rows)
    return {"teacher": args.teacher, "student": args.student, "student_step": student_meta.get("step"),
            "student_distill": {k: v for k, v in student_meta.get("distill", {}).items() if k != "optimizer"},
            "mcd": args.mcd, "baseline": args.baseline, "steps": args.steps, "num": args.num, "seed": args.seed, "rows": rows}


def floor_curve_gaps(rows: list[dict[str, Any]]) -> None:
    """row["floor_curve"]: for each row with recall, its recall minus the exact denoiser's temperature curve at
    the row's precision (sampler.quality.compare.paired_frontier_gap over the exact-denoiser rows, same noise
    and held-out set), or None when its precision lies beyond the temperatures measured."""
    curve = [r for r in rows if r["name"].startswith("exact denoiser") and r["recall"]]
    as_pairs = lambda r: {"precision_per_sequence": r["precision"]["per_sequence"],  # noqa: E731
                          "recall_per_sequence": r["recall"]["per_sequence"]}
    for row in rows:
        if len(curve) >= 2 and row["recall"] and all(row is not r for r in curve):
            gap = paired_frontier_gap(as_pairs(row), [as_pairs(r) for r in curve])
            row["floor_curve"] = gap and {**gap, "between": [curve[i]["name"] for i in gap["between"]]}


def format_rows(report: dict[str, Any]) -> str:
    exact = "exact denoiser, noise-shared" in report["rows"][-1]["paired"]
    lines = [f"{'row':<34} {'precision':>16} {'Δ vs shared':>16} {'Δ vs ancestral':>16} "
             + (f"{'Δ vs exact':>16} " if exact else "") + f"{'recall':>16} " + (f"{'ΔR vs exact':>16} " if exact else "") +
             f"{'ΔR vs T-curve':>16} {'unigram JS':>16} {'bigram JS':>16} {'KS':>14} {'tok/s':>8}"]
    for row in report["rows"]:
        p, rec, fid, typ = row["precision"], row["recall"], row["fidelity"], row["typicality"]
        shared, plain = row["paired"]["teacher, noise-shared"], row["paired"]["teacher, ancestral"]
        recall = f"{rec['value']:.4f}±{rec['se']:.4f}" if rec else "unavailable"
        vs_exact = row["paired"].get("exact denoiser, noise-shared", {})
        recall_vs_exact = (f"{vs_exact['recall_mean']:+.4f}±{vs_exact['recall_se']:.4f}" if "recall_mean" in vs_exact else "—")
        lines.append(
            f"{row['name']:<34} {p['value']:>9.4f}±{p['se']:.4f} {shared['mean']:>+9.4f}±{shared['se']:.4f} "
            f"{plain['mean']:>+9.4f}±{plain['se']:.4f} "
            + (f"{row['paired']['exact denoiser, noise-shared']['mean']:>+9.4f}±"
               f"{row['paired']['exact denoiser, noise-shared']['se']:.4f} " if exact else "")
            + f"{recall:>16} " + (f"{recall_vs_exact:>16} " if exact else "") + f"{_curve_cell(row):>16} "
            f"{fid[1]['js']:>9.4f}±{fid[1]['js_se']:.4f} "
            f"{fid[2]['js']:>9.4f}±{fid[2]['js_se']:.4f} {typ['ks']:>7.4f}±{typ['ks_se']:.4f} {row['tokens_per_s']:>8.0f}")
    ref = report["rows"][0]["fidelity"]
    lines.append(f"true sequences: unigram JS {ref[1]['reference_js']:.4f}, bigram JS {ref[2]['reference_js']:.4f}")
    return "\n".join(lines)


def _curve_cell(row: dict[str, Any]) -> str:
    if "floor_curve" not in row:
        return "—"
    gap = row["floor_curve"]
    return "beyond curve" if gap is None else f"{gap['gap']:+.4f}±{gap['se']:.4f}"


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """The report as strict JSON at `path` (per-sequence tensors as lists, NaN and infinities as null)."""
    Path(path).write_text(strict_json(json_ready(report, keep_tensors=True), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="a `mcd distill --method shadow` run")
    parser.add_argument("--mcd", default=None, help="an MCD student at the same step count (optional)")
    parser.add_argument("--baseline", default=None, help="a stochastic-baseline student at the same step count (optional)")
    parser.add_argument("--oracle", action="store_true", help="add the source's exact denoiser (noise-shared, same noise)")
    parser.add_argument("--oracle-temperatures", type=float, nargs="*", default=[],
                        help="with --oracle: also the exact denoiser at these temperatures (the floor's frontier)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rollout-steps", type=int, default=16, help="the teacher's rollout (0: skip that row)")
    parser.add_argument("--num", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    temperatures = args.oracle_temperatures
    if len(set(temperatures)) != len(temperatures) or 1.0 in temperatures or any(t <= 0 for t in temperatures):
        parser.error(f"--oracle-temperatures must be distinct positive values other than 1 (the T = 1 row is always "
                     f"there), got {temperatures}")
    report = run(args)
    print(format_rows(report))
    if args.out:
        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
