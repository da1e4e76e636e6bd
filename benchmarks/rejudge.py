"""The confirmatory re-run of the 4-step causal shadow student at matched cost with converged recall
(rule: benchmarks/preregistered/rejudge.txt).

`rows`: one JSON file of sampler rows (sampler.run.bench.sampler_rows: precision, recall with its k-series and
convergence diagnostic, cost, n-gram JS, KS, per-sequence values for pairing), all from sampler seed 0 on the
teacher's source and the bench's held-out set (64 sequences, generator seed 10 007):
- `--floor`: the exact denoiser sampled ancestrally at 4 steps T in {0.9, 0.95, 1, 1.05} and 8 steps T in {0.9, 1};
- `--shadow RUN` / `--ancestral RUN` (repeatable): a causal shadow student (noise-shared sampler, sequential
  bound) or a per-token-independent student (MCD, baseline; ancestral sampler, plain bound), at 4 steps, T = 1.
Recall: `recall_versus_k` at k = 1, 4, 16, 64, 256, then ×4 while remaining >= --tolerance, up to --max-k.

`judge`: per training seed, (A) the student against the lower envelope of the floor rows whose forward
equivalents per sample are <= its own (paired_frontier_gap, passes below −3 SE with every remaining < |gap|),
(B) against MCD and the baseline of that seed (better by >= 3 paired SE on precision and on converged recall).
It also judges the paper's two claims on the same rows (rule: benchmarks/preregistered/rejudge-long.txt):
P1, MCD at 4 steps no worse than its teacher (the exact denoiser, `--floor --floor-steps 64`) by 3 paired SE;
P2, MCD better than the baseline of the same seed by 3 paired SE on precision and on converged recall.

    python benchmarks/rejudge.py rows --teacher RUN --floor --out floor.json
    python benchmarks/rejudge.py rows --teacher RUN --shadow S0 --ancestral M0 --ancestral B0 --out seed0.json
    python benchmarks/rejudge.py judge floor.json seed0.json seed1.json seed2.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from sampler.checkpoint import load_checkpoint, load_schedule, load_source
from sampler.data import json_ready, paired_difference, strict_json
from sampler.quality.compare import paired_frontier_gap
from sampler.quality.envelope import lower_envelope
from sampler.quality.recall_convergence import estimator_for, recall_versus_k
from sampler.run.arms import ancestral, load_shadow, load_student, noise_shared
from sampler.run.bench import BenchConfig, EvalContext, SamplerSpec, sampler_rows

FLOOR = ((4, (0.9, 0.95, 1.0, 1.05)), (8, (0.9, 1.0)), (64, (1.0,)))  # 64 steps: the teacher of the 16x claim
DEFAULT_FLOOR_STEPS = (4, 8)
STEPS = 4
Z = 3.0
NO_RECALL = "not computed (--no-recall: the precision-and-cost pass)"


def context(teacher: str, args: argparse.Namespace) -> EvalContext:
    """The bench's evaluation context on the teacher's source: seed 0, 512 samples, 64 held-out sequences."""
    config = BenchConfig(num_samples=args.num, heldout=args.heldout, recall_k=args.max_k, recall_tolerance=args.tolerance,
                         cost_repeats=3, ngram_orders=(1, 2), num_bootstrap=100, sample_seed=0, progress=False)
    _, meta = load_checkpoint(Path(teacher))
    source, seq_len = load_source(meta), int(meta["model_config"]["seq_len"])
    heldout = source.sample_batch(config.heldout, seq_len, torch.Generator().manual_seed(config.sample_seed + 10_007))
    return EvalContext(config, source, load_schedule(meta), seq_len, heldout)


def series(ctx: EvalContext, denoiser: Any, steps: int, temperature: float) -> dict[str, Any]:
    """Recall at k = 1, 4, 16, 64, 256, then ×4 while remaining >= tolerance up to max_k (the rule's k-series);
    the estimator fits the sampler (sequential for a causal shadow student, plain otherwise)."""
    return recall_versus_k(denoiser, ctx.schedule, ctx.heldout, steps=steps, estimator=estimator_for(denoiser),
                           temperature=temperature, ks=(1, 4, 16, 64, 256), tolerance=ctx.config.recall_tolerance,
                           max_k=ctx.config.recall_k, seed=ctx.config.sample_seed * 7_919 + steps)


def rows_command(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    ctx = context(args.teacher, args)
    recall = None if args.no_recall else True  # None: precision, cost, fidelity only (recall "not computed")
    specs: list[tuple[SamplerSpec, int, tuple[float, ...]]] = []
    if args.floor:
        oracle = ctx.source.denoiser(dtype=torch.float64)
        specs += [(SamplerSpec("floor", "floor", None, oracle, ancestral, recall, NO_RECALL, series), steps, temps)
                  for steps, temps in FLOOR if steps in args.floor_steps]
    for run in args.shadow:
        specs.append((SamplerSpec(Path(run).name, "shadow", _seed(run), load_shadow(Path(run), "cpu"), noise_shared,
                                  recall, NO_RECALL, series), STEPS, (1.0,)))
    for run in args.ancestral:
        specs.append((SamplerSpec(Path(run).name, Path(run).name.split("-")[0], _seed(run), load_student(Path(run), "cpu"),
                                  ancestral, recall, NO_RECALL, series), STEPS, (1.0,)))
    rows = []
    for spec, steps, temperatures in specs:
        for row in sampler_rows(ctx, spec, steps, temperatures):
            rows.append(row)
            print(_row_line(row), flush=True)
            Path(args.out).write_text(strict_json(json_ready(
                {"heldout_true_nll": float((-ctx.source.log_prob(ctx.heldout) / ctx.seq_len).mean()), "rows": rows},
                keep_tensors=True)) + "\n")


def _seed(run: str) -> int | None:
    _, meta = load_checkpoint(Path(run))
    return meta.get("distill", {}).get("config", {}).get("seed")


def _remaining(row: dict[str, Any]) -> float:
    value = row["recall_diagnostic"]["remaining"]
    return math.inf if value is None else float(value)


def _row_line(row: dict[str, Any]) -> str:
    """| sampler | steps | T | precision | recall | k | change k/4 -> k | remaining | ESS | fwd | ms | bigram JS |"""
    d, cost = row["recall_diagnostic"], row["cost"]
    if d is None:
        return (f"| {row['sampler']} | {row['steps']} | {row['temperature']:g} | {row['precision'][0]:.4f} ± "
                f"{row['precision'][1]:.4f} | not computed | | | | | {cost['forward_equivalents']:.2f} | "
                f"{1000 * cost['wall_s_per_sample']:.2f} | {_bigram_js(row):.4f} |")
    change = "—" if d["change"] is None or (isinstance(d["change"], float) and math.isnan(d["change"])) else \
        f"{d['change']:+.4f} ± {d['change_se']:.4f}"
    return (f"| {row['sampler']} | {row['steps']} | {row['temperature']:g} | {row['precision'][0]:.4f} ± "
            f"{row['precision'][1]:.4f} | {row['recall'][0]:.4f} ± {row['recall'][1]:.4f} | {d['k']} | {change} | "
            f"{_remaining(row):.4f} | {d['ess']:.3f} | {cost['forward_equivalents']:.2f} | "
            f"{1000 * cost['wall_s_per_sample']:.2f} | {_bigram_js(row):.4f} |")


def _bigram_js(row: dict[str, Any]) -> float:
    fidelity = row["fidelity"]  # int keys in a live row, str keys once read back from JSON
    return (fidelity.get(2) or fidelity["2"])[0]


def _pairs(row: dict[str, Any]) -> dict[str, Any]:
    return {"precision_per_sequence": row["precision_per_sequence"], "recall_per_sequence": row["recall_per_sequence"]}


def against_envelope(student: dict[str, Any], floor: list[dict[str, Any]]) -> dict[str, Any]:
    """(A): the student's recall minus the lower envelope of the floor rows of cost <= its own, at its precision;
    without recall (the precision pass), the floor rows of cost <= its own that are more precise by > 3 paired SE."""
    cost = student["cost"]["forward_equivalents"]
    eligible = [r for r in floor if r["cost"]["forward_equivalents"] <= cost + 1e-9]
    if student["recall"] is None or any(r["recall"] is None for r in eligible):
        sharper = [f"{r['steps']} steps T={r['temperature']:g}: ΔP {d:+.4f} ± {se:.4f}" for r in eligible
                   for d, se in [paired_difference(student["precision_per_sequence"], r["precision_per_sequence"])]
                   if d > Z * se]
        return {"envelope": "recall not computed", "gap": None, "passes": False, "why": "no recall",
                "more_precise_floor_rows": sharper}
    envelope = lower_envelope([{**r, "precision": r["precision"][0], "recall": r["recall"][0]} for r in eligible])
    names = [f"{r['steps']} steps T={r['temperature']:g}" for r in envelope]
    gap = paired_frontier_gap(_pairs(student), [_pairs(r) for r in envelope]) if len(envelope) >= 2 else None
    if gap is None:
        return {"envelope": names, "gap": None, "passes": False, "why": "beyond the envelope's precision range"}
    bracket = [envelope[i] for i in gap["between"]]
    determined = all(_remaining(r) < abs(gap["gap"]) for r in (student, *bracket))
    return {"envelope": names, "gap": gap["gap"], "se": gap["se"], "between": [names[i] for i in gap["between"]],
            "determined": determined, "passes": determined and gap["gap"] < -Z * gap["se"]}


def paired_axes(a: dict[str, Any], b: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, float] | None, bool]:
    """a − b on precision and on recall, each (mean, paired SE); recall None when either row lacks it, and whether
    the recall difference is determined (both rows' remaining change < |Δ|)."""
    precision = paired_difference(a["precision_per_sequence"], b["precision_per_sequence"])
    if a["recall"] is None or b["recall"] is None:
        return precision, None, False
    recall = paired_difference(a["recall_per_sequence"], b["recall_per_sequence"])
    return precision, recall, _remaining(a) < abs(recall[0]) and _remaining(b) < abs(recall[0])


def against_row(student: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """(B): student − other on precision and recall (paired SE); recall counted only when both remaining < |Δ|."""
    (dp, dp_se), recall, determined = paired_axes(student, other)
    dr, dr_se = recall if recall is not None else (math.nan, math.nan)
    return {"other": other["sampler"], "cost_ok": other["cost"]["forward_equivalents"] <= student["cost"]["forward_equivalents"],
            "precision": [dp, dp_se], "recall": [dr, dr_se], "recall_determined": determined,
            "passes": dp < -Z * dp_se and determined and dr < -Z * dr_se}


def no_worse(student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """P1 (16x fewer steps at equal quality): the student is no worse than the teacher's many-step row by more than
    3 paired SE on precision, nor on recall where both rows have it (a recall difference counts as worse only when
    both remaining < it). Without the teacher's recall the claim can only fail (on precision) or stay open."""
    (dp, dp_se), recall, determined = paired_axes(student, teacher)
    precision_ok = dp <= Z * dp_se
    if recall is None:
        return {"precision": [dp, dp_se], "recall": None, "matches": False if not precision_ok else None}
    worse_recall = determined and recall[0] > Z * recall[1]
    return {"precision": [dp, dp_se], "recall": list(recall), "matches": precision_ok and not worse_recall}


def paper_claims(rows: list[dict[str, Any]]) -> list[str]:
    """P1 per seed: MCD at 4 steps against the 64-step exact teacher (no_worse); P2 per seed: MCD against the
    baseline of the same seed (against_row: better by >= 3 paired SE on precision and converged recall)."""
    lines = []
    teacher = [r for r in rows if r["arm"] == "floor" and r["steps"] == 64]
    for mcd in [r for r in rows if r["arm"] == "mcd"]:
        if teacher:
            p1 = no_worse(mcd, teacher[0])
            recall = "not computed" if p1["recall"] is None else f"{p1['recall'][0]:+.4f} ± {p1['recall'][1]:.4f}"
            lines.append(f"P1 seed {mcd['seed']}: MCD 4 steps − exact teacher 64 steps: ΔP {p1['precision'][0]:+.4f} ± "
                         f"{p1['precision'][1]:.4f}, ΔR {recall}, matches {p1['matches']}")
        for baseline in [r for r in rows if r["arm"] == "baseline" and r["seed"] == mcd["seed"]]:
            p2 = against_row(mcd, baseline)
            lines.append(f"P2 seed {mcd['seed']}: MCD − baseline: ΔP {p2['precision'][0]:+.4f} ± {p2['precision'][1]:.4f}, "
                         f"ΔR {p2['recall'][0]:+.4f} ± {p2['recall'][1]:.4f} (determined {p2['recall_determined']}), "
                         f"MCD strictly better {p2['passes']}")
    return lines


def judge_command(args: argparse.Namespace) -> None:
    rows = [row for path in args.files for row in json.loads(Path(path).read_text())["rows"]]
    for row in rows:
        print(_row_line(row))
    for line in paper_claims(rows):
        print(line)
    floor = [r for r in rows if r["arm"] == "floor" and r["steps"] in DEFAULT_FLOOR_STEPS]
    verdicts = []
    for student in [r for r in rows if r["arm"] == "shadow"]:
        others = [r for r in rows if r["arm"] in ("mcd", "baseline") and r["seed"] == student["seed"]]
        a = against_envelope(student, floor)
        b = [against_row(student, other) for other in others]
        # the rule: MCD and the baseline count only when they cost no more than the student (else: information)
        passes = a["passes"] and len(b) == 2 and all(x["passes"] for x in b if x["cost_ok"])
        verdicts.append(passes)
        gap = "beyond" if a["gap"] is None else f"{a['gap']:+.4f} ± {a['se']:.4f} ({a['gap'] / a['se']:+.1f} SE)"
        print(f"seed {student['seed']}: (A) envelope {a['envelope']}: gap {gap}, between {a.get('between')}, "
              f"determined {a.get('determined')}, passes {a['passes']}"
              + (f"; floor rows of cost <= the student's more precise by > 3 SE: {a['more_precise_floor_rows']}"
                 if "more_precise_floor_rows" in a else ""))
        for x in b:
            print(f"  (B) vs {x['other']} (cost <= student: {x['cost_ok']}): ΔP {x['precision'][0]:+.4f} ± "
                  f"{x['precision'][1]:.4f}, ΔR {x['recall'][0]:+.4f} ± {x['recall'][1]:.4f} "
                  f"(determined {x['recall_determined']}), passes {x['passes']}")
        for row in [r for r in floor if r["steps"] == STEPS]:  # information: the old claims were at equal steps
            x = against_row(student, row)
            print(f"  (equal steps, not judged) vs floor {row['steps']} steps T={row['temperature']:g}: ΔP "
                  f"{x['precision'][0]:+.4f} ± {x['precision'][1]:.4f}, ΔR {x['recall'][0]:+.4f} ± {x['recall'][1]:.4f} "
                  f"(determined {x['recall_determined']})")
    print(f"decision: {'PASSED' if verdicts and all(verdicts) and len(verdicts) == 3 else 'not established'} "
          f"({sum(verdicts)} of {len(verdicts)} seeds pass)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rows = commands.add_parser("rows")
    rows.add_argument("--teacher", required=True)
    rows.add_argument("--floor", action="store_true")
    rows.add_argument("--floor-steps", type=int, nargs="+", default=list(DEFAULT_FLOOR_STEPS),
                      help="with --floor: the floor rows at these step counts, of 4, 8, 64 (default: 4 8)")
    rows.add_argument("--shadow", action="append", default=[])
    rows.add_argument("--ancestral", action="append", default=[])
    rows.add_argument("--num", type=int, default=512)
    rows.add_argument("--heldout", type=int, default=64)
    rows.add_argument("--max-k", type=int, default=1024)
    rows.add_argument("--tolerance", type=float, default=0.005)
    rows.add_argument("--no-recall", action="store_true", help="precision, cost, n-gram JS and KS only")
    rows.add_argument("--out", required=True)
    judge = commands.add_parser("judge")
    judge.add_argument("files", nargs="+")
    args = parser.parse_args()
    rows_command(args) if args.command == "rows" else judge_command(args)


if __name__ == "__main__":
    main()
