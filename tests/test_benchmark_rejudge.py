"""benchmarks/rejudge.py's verdicts on hand-made rows whose answers are known by construction.

P1 (`no_worse`): MCD at 4 steps against its teacher at 64 steps; P2 (`against_row` as `paper_claims` applies it):
MCD against the baseline of the same seed. Rows are built with per-sequence values whose paired mean and SE are
fixed exactly, so each expected verdict follows from the rule (3 paired SE) and not from the code under test.
Planted bugs: the paired difference taken the wrong way round (teacher − student: a worse student would "match",
RJ1); a recall difference counted although a row's remaining change exceeds it (RJ2); P2 pairing MCD with the
baseline of another seed (RJ3).
"""

from __future__ import annotations

import torch

from benchmark_module import load_benchmark

module = load_benchmark("rejudge")


def _row(arm: str, seed: int | None, precision: torch.Tensor, recall: torch.Tensor | None, *, steps: int = 4,
         remaining: float = 0.001) -> dict:
    return {"arm": arm, "sampler": arm, "seed": seed, "steps": steps, "temperature": 1.0,
            "precision": [float(precision.mean()), 0.0], "precision_per_sequence": precision,
            "recall": None if recall is None else [float(recall.mean()), 0.0], "recall_per_sequence": recall,
            "recall_diagnostic": {"remaining": remaining}, "cost": {"forward_equivalents": float(steps)}}


def _shifted(base: torch.Tensor, mean: float) -> torch.Tensor:
    """base + mean + alternating ±0.01: its paired difference to base has mean `mean` and SE `SE`."""
    signs = torch.tensor([1.0, -1.0]).repeat(len(base) // 2)
    return base + mean + 0.01 * signs


BASE = torch.linspace(1.0, 3.0, 64, dtype=torch.float64)
SE = float((0.01 * torch.tensor([1.0, -1.0]).repeat(32)).std() / 8)  # std of the paired differences / sqrt(64)


def test_no_worse_fails_a_student_worse_by_many_se_and_passes_a_tie() -> None:
    teacher = _row("floor", None, BASE, BASE, steps=64)
    worse = _row("mcd", 0, _shifted(BASE, 10 * SE), BASE)
    tie = _row("mcd", 0, _shifted(BASE, 0.0), _shifted(BASE, 0.0))
    better = _row("mcd", 0, _shifted(BASE, -10 * SE), _shifted(BASE, -10 * SE))
    assert module.no_worse(worse, teacher)["matches"] is False
    assert module.no_worse(tie, teacher)["matches"] is True
    assert module.no_worse(better, teacher)["matches"] is True  # RJ1: reversed sign fails this and the first


def test_no_worse_without_the_teachers_recall_can_fail_but_not_pass() -> None:
    teacher = _row("floor", None, BASE, None, steps=64)
    assert module.no_worse(_row("mcd", 0, _shifted(BASE, 10 * SE), BASE), teacher)["matches"] is False
    assert module.no_worse(_row("mcd", 0, _shifted(BASE, 0.0), BASE), teacher)["matches"] is None


def test_a_recall_difference_inside_the_remaining_change_is_not_counted() -> None:
    teacher = _row("floor", None, BASE, BASE, steps=64)
    gap = 10 * SE
    loose = _row("mcd", 0, _shifted(BASE, 0.0), _shifted(BASE, gap), remaining=2 * gap)
    tight = _row("mcd", 0, _shifted(BASE, 0.0), _shifted(BASE, gap), remaining=gap / 2)
    assert module.no_worse(loose, teacher)["matches"] is True  # RJ2: undetermined, so not "worse"
    assert module.no_worse(tight, teacher)["matches"] is False


def test_paper_claims_pair_mcd_with_the_baseline_of_its_own_seed() -> None:
    rows = [_row("mcd", 0, _shifted(BASE, -10 * SE), _shifted(BASE, -10 * SE)),
            _row("baseline", 0, BASE, BASE),
            _row("baseline", 1, _shifted(BASE, -20 * SE), _shifted(BASE, -20 * SE)),
            _row("floor", None, _shifted(BASE, -30 * SE), _shifted(BASE, -30 * SE), steps=64)]
    lines = module.paper_claims(rows)
    assert [line.split(":")[0] for line in lines] == ["P1 seed 0", "P2 seed 0"]  # RJ3: seed 1's baseline is not used
    assert lines[0].endswith("matches False")
    assert lines[1].endswith("MCD strictly better True")
