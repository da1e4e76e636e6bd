"""Re-judge a finished `mcd bench-distill` OUT with today's comparison code, without sampling again.

A bench keeps every row's per-sequence precision, recall and entropy in OUT/bench_per_sequence.pt (paired:
one sampler seed, one held-out set per step count).  This script joins them to the rows of OUT/bench.json,
runs `sampler.run.bench.compare_rows` and `seed_means` again with the bench's own config, and prints
every comparison whose verdict changed or that lies strictly inside the other's temperature frontier, then
the counts before and after.  It reads OUT and writes nothing.

With z = 2 each "better" or "inside" test is one-sided at about 2.3 %: among M comparisons of samplers that
truly lie on the other's curve, about 0.023·M pass by chance.  M is printed per curve owner (the teacher, the
oracle, ...), since samplers lying well outside one owner's curve cannot pass against it by chance.

    python benchmarks/bench_recompare.py --out OUT [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from sampler.run.bench import BenchConfig, compare_rows, seed_means
from sampler.cli._common import add_threads_argument

ONE_SIDED_2SE = 0.02275  # P(N(0, 1) < −2)


def joined_rows(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(bench.json's rows with their per-sequence tensors from bench_per_sequence.pt, bench.json)."""
    for name in ("bench.json", "bench_per_sequence.pt"):
        if not (out / name).is_file():
            raise ValueError(f"--out {str(out)!r} holds no {name} (not a finished `mcd bench-distill` OUT)")
    result = json.loads((out / "bench.json").read_text())
    key = lambda row: (row["steps"], row["sampler"], row["temperature"])  # noqa: E731
    per_sequence = {key(r): r for r in torch.load(out / "bench_per_sequence.pt", weights_only=True)}
    missing = [key(r) for r in result["rows"] if key(r) not in per_sequence]
    if missing:
        raise ValueError(f"bench_per_sequence.pt in {str(out)!r} lacks rows {missing[:3]} of bench.json")
    rows = [{**row, **{k: v for k, v in per_sequence[key(row)].items() if k.endswith("_per_sequence")}} for row in result["rows"]]
    return rows, result


def recompare(out: Path) -> dict[str, Any]:
    """{"comparisons": compare_rows again, "changed": [(saved, new) comparisons whose verdict changed or that are
    inside], "counts": {...}}."""
    rows, result = joined_rows(out)
    config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in result["config"].items()})
    new = compare_rows(rows, config)
    name = lambda c: (c["a"], c["b"], c["steps_a"], c["steps_b"])  # noqa: E731
    old = {name(c): c for c in result["comparisons"]}
    if set(old) != {name(c) for c in new}:
        raise ValueError(f"--out {str(out)!r}: bench.json's comparisons are not the ones its rows give today "
                         "(saved by another version of the comparison code); nothing to set side by side")
    changed = [(old[name(c)], c) for c in new if c.get("inside") or c.get("dominates") != old[name(c)].get("dominates")]
    judged = [c for c in new if c.get("dominates") is not None]
    placed: dict[str, int] = {}
    for c in judged:
        if c.get("frontier_gap") is not None:
            placed[c["b"]] = placed.get(c["b"], 0) + 1
    counts = {"comparisons": len(judged), "placed_by_curve": placed,
              "dominates_before": sum(bool(c.get("dominates")) for c in result["comparisons"]),
              "dominates_now": sum(bool(c["dominates"]) for c in judged),
              "inside_now": sum(bool(c.get("inside")) for c in judged),
              "seed_means_now": [(e["steps"], e["arm"], e["vs"], e["dominates"], e["seeds"]) for e in seed_means(new, rows)
                                 if e["dominates"]]}
    return {"comparisons": new, "changed": changed, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="a finished `mcd bench-distill` output directory")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = recompare(args.out)
    print(f"{'steps':>5} {'a':<24} {'b':<24} {'frontier gap':>18} {'inside':>6}  before -> now")
    for before, now in report["changed"]:
        gap = "" if now.get("frontier_gap") is None else f"{now['frontier_gap']:+.4f} ± {now['frontier_gap_se']:.4f}"
        print(f"{now['steps_a']:>5} {now['a']:<24} {now['b']:<24} {gap:>18} {str(now.get('inside')):>6}  "
              f"{before.get('dominates')} -> {now['dominates']} ({now['reason']})")
    counts = report["counts"]
    print(f"\n{counts['comparisons']} comparisons with a verdict: dominates {counts['dominates_before']} before, "
          f"{counts['dominates_now']} now; inside a temperature curve now {counts['inside_now']}")
    for owner, n in counts["placed_by_curve"].items():
        print(f"placed against {owner}'s curve: {n}; if every one lay on it, about {ONE_SIDED_2SE * n:.1f} would pass "
              f"as inside by chance at z = 2 (none where the samplers lie clearly outside that curve)")
    for steps, arm, vs, dominates, seeds in counts["seed_means_now"]:
        print(f"seed means: {arm} vs {vs} at {steps} steps dominates on {dominates} of {seeds} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
