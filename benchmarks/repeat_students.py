"""Trained students on the repeat source: exact agreement beside precision and recall, at 1, 2 and 4 steps.

Rows at each step count N (all from sampler seed `--seed`; `--num` samples each; one held-out set of
`--heldout` true sequences per seed, shared by every row, so recall differences are paired):

- exact, ancestral:           the source's exact denoiser by the ancestral sampler (the factorisation floor);
- exact, confidence max_prob: the exact denoiser by the confidence-ordered sampler (`sampler.confidence`);
- teacher, ancestral:         the teacher network (`--teacher`);
- MCD / baseline, ancestral:  each `--mcd` / `--baseline` run (`mcd distill --method mcd|baseline`);
- shadow, noise-shared:       each `--shadow` run (a causal shadow student) by the noise-shared sampler.

Columns: exact agreement (`sampler.quality.agreement.exact_agreement_rate`, binomial SE) beside the source's
own P(all equal); precision E_q[−log p(x)]/L under the true source (± SE; +inf at noise 0 once a sample is
inconsistent, with the share of such samples); its difference to the floor row at the same N (± SE of the
per-sample differences, same sampler seed); the samples' plug-in unigram entropy (nats; the same estimate on
as many true sequences is printed as reference); recall: the k-draw importance-weighted upper bound on
−log q_N(x)/L of the held-out sequences (`sampler.quality.two_axis`; the sequential bound for a causal shadow
student), exact (no k) for the confidence sampler with max_prob (`confidence_recall_per_sequence`).

    PYTHONPATH=. python benchmarks/repeat_students.py --teacher RUN --shadow RUN [RUN ...] --mcd RUN --baseline RUN
        [--steps 1 2 4] [--num 2048] [--heldout 256] [--k 4] [--seed 0] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sampler.checkpoint import load_source
from sampler.run.open import InferenceConfig, open_for_inference
from sampler.confidence import confidence_recall_per_sequence, confidence_sample
from sampler.data import paired_difference
from sampler.quality.agreement import exact_agreement_rate
from sampler.quality.recall import mean_and_se
from sampler.protocols import reads_shadow_noise
from sampler.shadow.recall import shadow_recall_unavailable
from sampler.quality.two_axis import _PATTERNS, recall_metric, two_axis_metrics
from sampler.sampling import ancestral_sample
from sampler.shadow.student import shadow_sample

FLOOR = "exact, ancestral"


def unigram_entropy(x: torch.Tensor, vocab_size: int) -> float:
    """Plug-in entropy −Σ_v f_v log f_v (nats) of the token frequencies f of x."""
    counts = torch.bincount(x.reshape(-1), minlength=vocab_size).double()
    freq = counts[counts > 0] / counts.sum()
    return float(-(freq * freq.log()).sum())


def shadow_recall_unavailable_reason(denoiser: Any) -> str | None:
    """None when recall can be computed for `denoiser` (a per-token-independent one, or a causal shadow student)."""
    return shadow_recall_unavailable(denoiser) if reads_shadow_noise(denoiser) else None


def metrics_reason(denoiser: Any) -> str:
    return "no denoiser given" if denoiser is None else (shadow_recall_unavailable_reason(denoiser) or "")


def measure(name: str, samples: torch.Tensor, seconds: float, source: Any, seed: int, heldout: torch.Tensor, k: int,
            recall_of: Any = None, schedule: Any = None, steps: int | None = None, exact_recall: Any = None) -> dict[str, Any]:
    """One row: agreement, precision (per-sample NLL kept for paired differences), unigram entropy, recall."""
    nll = -source.log_prob(samples) / samples.shape[1]
    if torch.isfinite(nll).all():
        metrics = two_axis_metrics(samples, source, denoiser=recall_of, schedule=schedule if recall_of is not None
                                   else None, steps=steps if recall_of is not None else None,
                                   heldout=heldout if recall_of is not None else None, k=k, ngram_orders=(1,), seed=seed)
    else:  # noise 0 and an inconsistent sample: two_axis refuses infinite precision, so recall alone, same streams
        metrics = {"recall": None, "unavailable": {"recall": metrics_reason(recall_of)}}
        if recall_of is not None and shadow_recall_unavailable_reason(recall_of) is None:
            metrics["recall"] = recall_metric(recall_of, schedule, heldout, source, steps, 1.0, k, None,
                                              torch.Generator().manual_seed(seed * 4 + _PATTERNS), "cpu", 256)
    row = {"name": name, "steps": steps, "seconds": seconds, "agreement": exact_agreement_rate(samples, source),
           "precision": float(nll.mean()), "precision_se": float(nll.std() / math.sqrt(len(nll))),
           "inconsistent_share": float(torch.isinf(nll).double().mean()), "per_sequence_nll": nll,
           "unigram_entropy": unigram_entropy(samples, source.vocab_size), "recall": None, "recall_note": None}
    if metrics["recall"] is not None:
        row["recall"] = {"value": metrics["recall"]["value"], "se": metrics["recall"]["se"], "k": k,
                         "per_sequence": metrics["recall"]["per_sequence"]}
    elif exact_recall is not None:
        per_sequence = exact_recall()
        value, se = mean_and_se(per_sequence, "recall")
        row["recall"] = {"value": value, "se": se, "k": "exact", "per_sequence": per_sequence}
    else:
        row["recall_note"] = metrics["unavailable"].get("recall")
    return row


def _open(run_dir: str, threads: int) -> Any:
    run = open_for_inference(InferenceConfig(ckpt=run_dir, device="cpu", threads=threads))
    model, meta, schedule = run.model, run.meta, run.schedule
    return model, meta, schedule


def run(args: argparse.Namespace) -> dict[str, Any]:
    teacher, meta, schedule = _open(args.teacher, args.threads)
    source = load_source(meta)
    config = teacher.config
    L, V, mask = config.seq_len, config.vocab_size, config.mask_id
    exact = source.denoiser(mask, dtype=torch.float64)
    heldout = source.sample_batch(args.heldout, L, torch.Generator().manual_seed(10_007 + args.seed))
    true_samples = source.sample_batch(args.num, L, torch.Generator().manual_seed(20_011 + args.seed))
    students = [(f"shadow {Path(r).name}", *_open(r, args.threads)[:2]) for r in args.shadow]
    others = [(f"{kind} {Path(r).name}", _open(r, args.threads)[0]) for kind, runs in (("MCD", args.mcd),
              ("baseline", args.baseline)) for r in runs]
    for name, _, student_meta in students:
        if load_source(student_meta).describe() != source.describe():
            raise ValueError(f"{name} was trained on {student_meta['source']}, the teacher on {meta['source']}")
    rows = []

    def add(name: str, draw: Any, steps: int, **recall: Any) -> None:
        start = time.perf_counter()
        samples = draw()
        rows.append(measure(name, samples, time.perf_counter() - start, source, args.seed, heldout, args.k,
                            schedule=schedule, steps=steps, **recall))
        r = rows[-1]
        print(f"  {name} N={steps}: agreement {r['agreement']['rate']:.4f} ({r['seconds']:.1f} s)", file=sys.stderr,
              flush=True)

    def plain(model: Any, steps: int) -> Any:
        return lambda: ancestral_sample(model, schedule, num_steps=steps, num_samples=args.num, seq_len=L, mask_id=mask, vocab_size=V,
                                        generator=torch.Generator().manual_seed(args.seed))

    for steps in args.steps:
        add(FLOOR, plain(exact, steps), steps, recall_of=exact)
        add("exact, confidence max_prob", lambda: confidence_sample(
            exact, schedule, num_samples=args.num, num_steps=steps, seq_len=L, mask_id=mask, vocab_size=V,
            generator=torch.Generator().manual_seed(args.seed)), steps,
            exact_recall=lambda: confidence_recall_per_sequence(exact, schedule, heldout, num_steps=steps, mask_id=mask))
        add("teacher, ancestral", plain(teacher, steps), steps, recall_of=teacher)
        for name, model in others:
            add(f"{name}, ancestral", plain(model, steps), steps, recall_of=model)
        for name, student, _ in students:
            add(f"{name}, noise-shared", lambda: shadow_sample(student, schedule, num_steps=steps, num_samples=args.num, seq_len=L, seed=args.seed), steps,
                recall_of=student)
    paired_to_floor(rows)
    reference = {"agreement": float(source.agreement_probability(L)), "unigram_entropy": unigram_entropy(true_samples, V),
                 "true_precision": float((-source.log_prob(true_samples) / L).mean()),
                 "heldout_nll": float((-source.log_prob(heldout) / L).mean())}
    return {"source": source.describe(), "teacher": args.teacher, "teacher_step": meta.get("step"),
            "students": {name: {"step": m.get("step"), "distill": {k: v for k, v in m.get("distill", {}).items()
                                                                    if k not in ("optimizer", "teacher_meta")}}
                         for name, _, m in students},
            "num": args.num, "heldout": args.heldout, "k": args.k, "seed": args.seed, "reference": reference, "rows": rows}


def paired_to_floor(rows: list[dict[str, Any]]) -> None:
    """row["vs_floor"]: precision and recall minus the floor row's at the same step count, paired by index
    (same sampler seed; the recall pairs share the held-out set); the precision entry is absent where either
    precision is infinite, the recall entry where either recall is missing."""
    floors = {r["steps"]: r for r in rows if r["name"] == FLOOR}
    for row in rows:
        floor = floors[row["steps"]]
        a, b = row["per_sequence_nll"], floor["per_sequence_nll"]
        row["vs_floor"] = {}
        if torch.isfinite(a).all() and torch.isfinite(b).all():
            mean, se = paired_difference(a, b)
            row["vs_floor"].update(precision=mean, precision_se=se)
        if row["recall"] is not None and floor["recall"] is not None:
            mean, se = paired_difference(row["recall"]["per_sequence"], floor["recall"]["per_sequence"])
            row["vs_floor"].update(recall=mean, recall_se=se)


def format_table(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [f"source {report['source']}; {report['num']} samples per row, sampler seed {report['seed']}; recall on "
             f"{report['heldout']} held-out sequences (true NLL {ref['heldout_nll']:.4f}); reference: agreement "
             f"{ref['agreement']:.4f}, precision of true samples {ref['true_precision']:.4f}, unigram entropy "
             f"{ref['unigram_entropy']:.4f}",
             "| row | steps | agreement ± SE | precision ± SE | inconsistent | Δprecision vs floor | unigram H | "
             "recall ± SE (k) | Δrecall vs floor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        agreement = f"{r['agreement']['rate']:.4f} ± {r['agreement']['se']:.4f}"
        precision = f"{r['precision']:.4f} ± {r['precision_se']:.4f}" if math.isfinite(r["precision"]) else "inf"
        vs = r["vs_floor"]
        d_precision = ("—" if "precision" not in vs or r["name"] == FLOOR
                       else f"{vs['precision']:+.4f} ± {vs['precision_se']:.4f}")
        rec = r["recall"]
        recall = f"{rec['value']:.4f} ± {rec['se']:.4f} ({rec['k']})" if rec else f"unavailable: {r['recall_note']}"
        d_recall = ("—" if "recall" not in vs or r["name"] == FLOOR
                    else f"{vs['recall']:+.4f} ± {vs['recall_se']:.4f}")
        lines.append(f"| {r['name']} | {r['steps']} | {agreement} | {precision} | {r['inconsistent_share']:.4f} | "
                     f"{d_precision} | {r['unigram_entropy']:.3f} | {recall} | {d_recall} |")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher run (its source is the repeat source)")
    parser.add_argument("--shadow", nargs="*", default=[], help="causal shadow-student runs")
    parser.add_argument("--mcd", nargs="*", default=[], help="MCD student runs")
    parser.add_argument("--baseline", nargs="*", default=[], help="stochastic-baseline student runs")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--num", type=int, default=2048)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    for name in ("num", "heldout", "k"):
        if getattr(args, name) < 2 and name != "k" or getattr(args, name) < 1:
            parser.error(f"--{name} must be at least {1 if name == 'k' else 2}, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    report = run(args)
    print(format_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(_plain(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
