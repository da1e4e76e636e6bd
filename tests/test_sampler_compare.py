"""`dominance(a, b)` and `frontier_gap`: when a sampler beats another on the two axes (sampler.quality.compare)."""

from __future__ import annotations

import pytest
import torch

from sampler.quality.compare import dominance, frontier_gap, paired_differences

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
    b = _row(0.0, 0.0, seed=2)
    a = _row(+0.20, +0.01, seed=1)  # worse precision than b at T = 1, yet below b's curve at its own precision
    curve = [(b["precision"][0] - 0.1, b["recall"][0] + 0.20), (b["precision"][0], b["recall"][0]),
             (b["precision"][0] + 0.4, b["recall"][0] + 0.30)]
    verdict = dominance(a, b, curve=curve)
    assert verdict["inside"] and verdict["dominates"] and verdict["frontier_gap"] < 0
    assert not dominance(a, b)["dominates"]  # without the curve it is only worse on precision


def test_frontier_gap_interpolates_and_refuses_to_extrapolate() -> None:
    curve = [(1.0, 2.0), (2.0, 1.0), (3.0, 3.0)]
    assert frontier_gap((1.5, 1.2), curve) == pytest.approx(1.2 - 1.5)
    assert frontier_gap((2.5, 2.0), curve) == pytest.approx(0.0)
    assert frontier_gap((0.5, 1.0), curve) is None
    with pytest.raises(ValueError, match="curve"):
        frontier_gap((1.0, 1.0), [(1.0, 1.0)])
