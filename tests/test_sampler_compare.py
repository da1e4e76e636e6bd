"""`dominance(a, b)` and `paired_frontier_gap`: when a sampler beats another on the two axes (sampler.quality.compare)."""

from __future__ import annotations

import pytest
import torch

from sampler.quality.compare import dominance, paired_differences, paired_frontier_gap

N = 400


def _row(precision_shift: float, recall_shift: float, js: float = 0.10, ks: float = 0.20, seed: int = 0) -> dict:
    """A row whose per-sequence values are a shared base plus a shift (so paired SEs are small but not zero)."""
    g = torch.Generator().manual_seed(seed)
    base_p = 1.6 + 0.3 * torch.randn(N, generator=torch.Generator().manual_seed(100), dtype=torch.float64)
    base_r = 1.5 + 0.3 * torch.randn(N, generator=torch.Generator().manual_seed(101), dtype=torch.float64)
    p = base_p + precision_shift + 0.01 * torch.randn(N, generator=g, dtype=torch.float64)
    r = base_r + recall_shift + 0.01 * torch.randn(N, generator=g, dtype=torch.float64)
    se = lambda v: float(v.std() / N**0.5)  # noqa: E731
    return {"precision": [float(p.mean()), se(p)], "recall": [float(r.mean()), se(r)],
            "precision_per_sequence": p, "recall_per_sequence": r,
            "fidelity": {1: [0.01, 0.002], 2: [js, 0.005]}, "typicality": [ks, 0.02]}


def test_paired_differences_use_the_paired_se() -> None:
    a, b = _row(-0.05, -0.02, seed=1), _row(0.0, 0.0, seed=2)
    d = paired_differences(a, b)
    assert d["precision"][0] == pytest.approx(a["precision"][0] - b["precision"][0])
    # the shared base cancels: the paired SE (~0.01·√2/√N) is far below the unpaired one (~0.3·√2/√N)
    assert d["precision"][1] < 0.1 * (a["precision"][1] ** 2 + b["precision"][1] ** 2) ** 0.5
    assert d["fidelity"][2] == pytest.approx((0.0, (2 * 0.005**2) ** 0.5))


def test_dominates_only_when_better_on_both_axes_and_not_worse_elsewhere() -> None:
    b = _row(0.0, 0.0, seed=2)
    assert dominance(_row(-0.05, -0.02, seed=1), b)["dominates"]
    # sharper: better precision, worse recall -> no
    sharper = dominance(_row(-0.10, +0.03, seed=1), b)
    assert not sharper["dominates"] and sharper["better"] == [True, False]
    # better on both, but the bigram JS got worse beyond 2 SE -> no
    worse_js = dominance(_row(-0.05, -0.02, js=0.13, seed=1), b)
    assert not worse_js["dominates"] and "fidelity" in worse_js["reason"]
    # better on both, KS worse by 1 SE only -> still dominates (not worse beyond z SE)
    assert dominance(_row(-0.05, -0.02, ks=0.22, seed=1), b)["dominates"]
    # a difference within noise is not "better"
    assert not dominance(_row(-0.0005, -0.02, seed=1), b)["dominates"]
    with pytest.raises(ValueError, match="z"):
        dominance(_row(0, 0), b, z=0.0)


def test_inside_the_temperature_frontier_counts_as_dominating() -> None:
    """b's curve: (−0.1, +0.20), b itself (0, 0), (+0.4, +0.30) as shifts of one shared base.  a = (+0.20, +0.14)
    is worse than b on both axes, yet 0.01 below the curve's recall (+0.15) at its precision.  The paired SE of
    that gap is about 0.001, a's own recall SE 0.015.  Planted bug: judging "inside" by a's unpaired recall SE
    (0.01 < 2·0.015: not inside)."""
    b = _row(0.0, 0.0, seed=2)
    curve = [_row(-0.1, +0.20, seed=3), b, _row(+0.4, +0.30, seed=4)]
    a = _row(+0.20, +0.14, seed=1)
    verdict = dominance(a, b, curve=curve)
    assert verdict["frontier_gap"] == pytest.approx(-0.01, abs=0.003)
    assert verdict["frontier_gap_se"] < 0.1 * a["recall"][1]
    assert verdict["inside"] and verdict["dominates"] and verdict["reason"] == "strictly inside the temperature frontier"
    assert not dominance(a, b)["dominates"]  # without the curve it is worse on both axes
    on_curve = dominance(_row(+0.20, +0.15, seed=1), b, curve=curve)
    assert not on_curve["inside"] and not on_curve["dominates"]
    beyond = dominance(_row(+0.60, +0.10, seed=1), b, curve=curve)  # precision past the sweep: no extrapolation
    assert beyond["frontier_gap"] is None and not beyond["inside"]


# --------------------------------------------------------------------------- paired_frontier_gap


def _curve_row(precision: torch.Tensor, recall: torch.Tensor) -> dict:
    return {"precision_per_sequence": precision, "recall_per_sequence": recall}


def test_paired_frontier_gap_interpolates_between_the_bracketing_points() -> None:
    """The row sits a quarter of the way from a (P = 2.0) to b (P = 2.4): the curve's recall there is
    0.75·R_a + 0.25·R_b.  Planted bugs: weights swapped (0.25·R_a + 0.75·R_b: off by 0.1), the wrong pair of
    points (c), or order-dependence (the curve handed over unsorted)."""
    ones = torch.ones(4, dtype=torch.float64)
    a = _curve_row(2.0 * ones, 1.6 * ones)
    b = _curve_row(torch.tensor([2.3, 2.5, 2.4, 2.4], dtype=torch.float64), 1.8 * ones)
    c = _curve_row(2.8 * ones, 2.5 * ones)
    row = _curve_row(torch.tensor([2.0, 2.2, 2.1, 2.1], dtype=torch.float64), torch.tensor([1.5, 1.7, 1.6, 1.6], dtype=torch.float64))
    expected = 1.6 - (0.75 * 1.6 + 0.25 * 1.8)  # = −0.05 by hand
    for curve in ([a, b, c], [c, a, b]):
        out = paired_frontier_gap(row, curve)
        assert out["gap"] == pytest.approx(expected, abs=1e-12) and out["weight"] == pytest.approx(0.75)
        assert {id(curve[i]) for i in out["between"]} == {id(a), id(b)}
    assert paired_frontier_gap(_curve_row(3.0 * ones, ones), [a, b, c]) is None  # beyond the curve: no extrapolation
    with pytest.raises(ValueError, match="curve_rows"):
        paired_frontier_gap(row, [a])
    with pytest.raises(ValueError, match="distinct mean precisions"):  # a tie would make the result order-dependent
        paired_frontier_gap(row, [a, b, _curve_row(2.4 * ones, 1.0 * ones)])
    with pytest.raises(ValueError, match="same number"):  # a length-1 row would broadcast to an SE of 0
        paired_frontier_gap(_curve_row(torch.tensor([2.1], dtype=torch.float64), torch.tensor([1.6], dtype=torch.float64)), [a, b])


def test_paired_frontier_gap_at_a_kink_takes_the_steeper_slope() -> None:
    """A row exactly at the interior point b (P = 2.4) sits where the slope jumps from 0.5 (a→b) to 2.0 (b→c):
    the SE's position term uses 2.0.  By hand: p − p_b = (−0.1, 0.1, 0, 0), var 0.02/3; r − r_b constant;
    se = sqrt(2.0²·(0.02/3)/4) = 0.0816 (the left slope alone would give 0.0204)."""
    ones = torch.ones(4, dtype=torch.float64)
    a, b, c = _curve_row(2.0 * ones, 1.6 * ones), _curve_row(2.4 * ones, 1.8 * ones), _curve_row(2.8 * ones, 2.6 * ones)
    row = _curve_row(torch.tensor([2.3, 2.5, 2.4, 2.4], dtype=torch.float64), 1.7 * ones)
    out = paired_frontier_gap(row, [a, b, c])
    assert out["gap"] == pytest.approx(-0.1) and out["se"] == pytest.approx((4.0 * 0.02 / 3 / 4) ** 0.5)


def test_paired_frontier_gap_se_is_paired_and_calibrated() -> None:
    """Rows share a per-sequence base (paired noise) and the row lies on the true curve (gap 0).  Its 2-SE
    interval must cover 0 in 95.4 % of 300 seeded replicates; the acceptance band [0.91, 0.995] is 3.7 and 3.4
    binomial SDs from 0.954 (false-fail rate < 1e-3).  Planted bugs: an unpaired SE (over-covers: ~100 %), the
    delta-method term dropped (the row's precision is noisy and the curve's slope 1: covered 67/300)."""
    n, covered = 200, 0
    g = torch.Generator().manual_seed(11)
    for _ in range(300):
        base_p, base_r = 0.3 * torch.randn(n, generator=g, dtype=torch.float64), 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        noise = lambda sd: sd * torch.randn(n, generator=g, dtype=torch.float64)  # noqa: E731
        a = _curve_row(2.0 + base_p + noise(0.02), 1.6 + base_r + noise(0.05))
        b = _curve_row(2.4 + base_p + noise(0.02), 2.0 + base_r + noise(0.05))  # slope (2.0 − 1.6)/(2.4 − 2.0) = 1
        row = _curve_row(2.2 + noise(0.3), 1.8 + base_r + noise(0.05))  # on the line; its precision unpaired and noisy
        out = paired_frontier_gap(row, [a, b])
        covered += abs(out["gap"]) < 2 * out["se"]
    assert 0.91 <= covered / 300 <= 0.995


def test_shadow_student_benchmark_places_rows_against_the_floor_curve() -> None:
    """benchmarks/shadow_student.py: every row with recall (not the floor rows themselves) gets its gap to the
    exact denoiser's temperature curve, built from the exact-denoiser rows only (the teacher row, far out at
    P = 3.0, must not join the curve: with it the student would be bracketed by T = 0.9 and the teacher)."""
    from benchmark_module import load_benchmark

    module = load_benchmark("shadow_student")
    ones = torch.ones(8, dtype=torch.float64)

    def row(name: str, precision: float, recall: float | None) -> dict:
        return {"name": name, "precision": {"per_sequence": precision * ones},
                "recall": None if recall is None else {"per_sequence": recall * ones}}

    rows = [row("teacher, ancestral", 3.0, 2.0), row("shadow student", 2.25, 1.60), row("shadow, fresh uniform", 2.3, None),
            row("exact denoiser, noise-shared", 2.2, 1.62), row("exact denoiser, T=0.9, noise-shared", 2.0, 1.63),
            row("exact denoiser, T=1.1, noise-shared", 2.4, 1.66)]
    module.floor_curve_gaps(rows)
    student = rows[1]["floor_curve"]
    assert student["gap"] == pytest.approx(1.60 - (0.75 * 1.62 + 0.25 * 1.66))
    assert student["between"] == ["exact denoiser, noise-shared", "exact denoiser, T=1.1, noise-shared"]
    assert rows[0]["floor_curve"] is None  # beyond the measured temperatures
    assert all("floor_curve" not in r for r in rows[2:])
