"""When one sampler beats another on the two axes: `dominance(a, b)`, `frontier_gap` and `paired_frontier_gap`.

Every metric here is lower-is-better: precision E_q[−log p]/L, recall (held-out NLL bound), n-gram JS and the
KS statistic.  A difference d = a − b with standard error se is

    better      when d < −z·se,
    not worse   when d <  z·se.

a dominates b when a is better on precision AND recall, or lies strictly inside b's temperature frontier
(frontier_gap < −z·se, see below), and is not worse on any n-gram fidelity order nor on typicality.
"""

from __future__ import annotations

import math

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def frontier_gap(point: tuple[float, float], curve: Sequence[tuple[float, float]]) -> float | None:
    """recall(point) − recall of the curve at the point's precision, the curve (precision, recall) pairs of a
    temperature sweep joined by straight lines in order of precision (sampler.data.frontier_at_entropy);
    None when the point's precision lies outside the swept range (no extrapolation).
    < 0: the point lies inside (below) the frontier."""
    from sampler.data import frontier_at_entropy

    if len(curve) < 2:
        raise ValueError(f"curve must hold at least 2 (precision, recall) points, got {len(curve)}")
    precisions = [float(p) for p, _ in curve]
    if not min(precisions) <= float(point[0]) <= max(precisions):
        return None
    return float(point[1]) - frontier_at_entropy(curve, float(point[0]))


def paired_frontier_gap(row: Mapping[str, Any], curve_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """recall(row) − recall of a temperature curve at row's precision, with a paired standard error.

    Every row holds `precision_per_sequence` and `recall_per_sequence`, paired across rows (the same sampler
    noise, the same held-out set).  With P, R the means, a and b the two curve rows whose precisions bracket
    P_row (curve sorted by precision), the curve between them is the straight line: weight
    w = (P_b − P_row)/(P_b − P_a), and

        gap = mean_i [r_i − w·ra_i − (1 − w)·rb_i]              (< 0: the row lies inside the curve)
        se² = var_i[r − w·ra − (1 − w)·rb]/N + slope²·var_i[p − w·pa − (1 − w)·pb]/N,  slope = (R_b − R_a)/(P_b − P_a),

    the second term the delta method for where on the curve the row sits (its precision is an estimate too).
    Returns {"gap", "se", "weight", "between": (index of a, index of b) in curve_rows} or None when P_row lies
    outside the curve's precision range (no extrapolation)."""
    if len(curve_rows) < 2:
        raise ValueError(f"curve_rows must hold at least 2 rows, got {len(curve_rows)}")

    def values(r: Mapping[str, Any], key: str) -> torch.Tensor:
        return torch.as_tensor(r[key + "_per_sequence"], dtype=torch.float64).reshape(-1)

    order = sorted(range(len(curve_rows)), key=lambda i: float(values(curve_rows[i], "precision").mean()))
    means = [float(values(curve_rows[i], "precision").mean()) for i in order]
    p_row = float(values(row, "precision").mean())
    if not means[0] <= p_row <= means[-1]:
        return None
    k = next(k for k in range(len(order) - 1) if means[k] <= p_row <= means[k + 1])
    a, b = curve_rows[order[k]], curve_rows[order[k + 1]]
    span = means[k + 1] - means[k]
    w = 1.0 if span == 0 else (means[k + 1] - p_row) / span
    recall_d = values(row, "recall") - w * values(a, "recall") - (1 - w) * values(b, "recall")
    precision_d = values(row, "precision") - w * values(a, "precision") - (1 - w) * values(b, "precision")
    slope = 0.0 if span == 0 else float(values(b, "recall").mean() - values(a, "recall").mean()) / span
    variance = recall_d.var() / recall_d.numel() + slope**2 * precision_d.var() / precision_d.numel()
    return {"gap": float(recall_d.mean()), "se": float(variance.sqrt()), "weight": w, "between": (order[k], order[k + 1])}


def paired_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """a − b with standard errors, for two rows of `sampler_row` form (`precision_per_sequence`,
    `recall_per_sequence`: paired tensors, same sampler seed and held-out set; `fidelity`: {order: (JS, se)};
    `typicality`: (KS, se)).  Precision and recall: paired SE std(a_i − b_i)/sqrt(N); fidelity and typicality:
    bootstrap SEs combined as if independent, sqrt(se_a² + se_b²) (conservative when a and b are positively
    correlated, as paired samplers are)."""
    from sampler.data import paired_difference

    out: dict[str, Any] = {}
    for key in ("precision", "recall"):
        out[key] = paired_difference(a[key + "_per_sequence"], b[key + "_per_sequence"])
    out["fidelity"] = {n: (a["fidelity"][n][0] - b["fidelity"][n][0], math.hypot(a["fidelity"][n][1], b["fidelity"][n][1]))
                       for n in a["fidelity"]}
    out["typicality"] = (a["typicality"][0] - b["typicality"][0], math.hypot(a["typicality"][1], b["typicality"][1]))
    return out


def dominance(
    a: Mapping[str, Any], b: Mapping[str, Any], *, curve: Sequence[tuple[float, float]] | None = None, z: float = 2.0,
) -> dict[str, Any]:
    """Whether sampler a dominates sampler b (module docstring), for rows of `paired_differences`' form.

    `curve`: b's temperature sweep as (precision, recall) points, or None; a is strictly inside it when its
    frontier_gap < −z·se_recall(a).  Returns {"dominates", "reason", "better", "inside", "not_worse", "differences"}.
    """
    if not (isinstance(z, (int, float)) and z > 0):
        raise ValueError(f"z must be positive, got {z!r}")
    diffs = paired_differences(a, b)
    better = [d < -z * se for d, se in (diffs["precision"], diffs["recall"])]
    gap = None
    if curve is not None:
        gap = frontier_gap((a["precision"][0], a["recall"][0]), curve)
    inside = gap is not None and gap < -z * a["recall"][1]
    not_worse = all(d < z * se for d, se in [*diffs["fidelity"].values(), diffs["typicality"]])
    common = {"better": better, "inside": inside, "frontier_gap": gap, "not_worse": not_worse, "differences": diffs}
    if all(better) or inside:
        how = "better on precision and recall" if all(better) else "strictly inside the temperature frontier"
        if not_worse:
            return {"dominates": True, "reason": how, **common}
        return {"dominates": False, "reason": f"{how}, but worse on n-gram fidelity or typicality", **common}
    return {"dominates": False, "reason": "neither better on both precision and recall nor inside the frontier", **common}
