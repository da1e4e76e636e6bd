"""When one sampler beats another on the two axes: `dominance(a, b)` and `paired_frontier_gap`.

Every metric here is lower-is-better: precision E_q[−log p]/L, recall (held-out NLL bound), n-gram JS and the
KS statistic.  A difference d = a − b with standard error se is

    better      when d < −z·se,
    not worse   when d <  z·se.

a dominates b when a is better on precision AND recall, or lies strictly inside b's temperature frontier
(paired_frontier_gap < −z·se, see below), and is not worse on any n-gram fidelity order nor on typicality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sampler.data import paired_difference


def paired_frontier_gap(row: Mapping[str, Any], curve_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """recall(row) − recall of a temperature curve at row's precision, with a paired standard error.

    Every row holds `precision_per_sequence` and `recall_per_sequence` (N ≥ 2 each), paired across rows: the
    same sampler noise for precision, the same held-out set for recall.  With P, R the means, a and b the two
    curve rows whose precisions bracket P_row (curve sorted by precision), the curve between them is the
    straight line: weight w = (P_b − P_row)/(P_b − P_a), and

        gap = mean_i [r_i − w·ra_i − (1 − w)·rb_i]              (< 0: the row lies inside the curve)
        se² = var_i[r − w·ra − (1 − w)·rb]/N + slope²·var_i[p − w·pa − (1 − w)·pb]/N,  slope = (R_b − R_a)/(P_b − P_a),

    the second term the delta method for where on the curve the row sits (its precision is an estimate too).
    The two terms add because precision is measured on generated samples and recall on held-out sequences,
    independent of each other.  A row exactly at an interior curve point takes the steeper neighbouring slope
    (the conservative SE).  Returns {"gap", "se", "weight", "between": (index of a, index of b) in curve_rows},
    or None when P_row lies outside the curve's precision range (no extrapolation).  ValueError on fewer than 2
    curve rows, two curve rows of equal mean precision, or per-sequence lengths that differ between rows."""
    if len(curve_rows) < 2:
        raise ValueError(f"curve_rows must hold at least 2 rows, got {len(curve_rows)}")
    rows = [row, *curve_rows]
    per_seq = {key: [torch.as_tensor(r[key + "_per_sequence"], dtype=torch.float64).reshape(-1) for r in rows]
               for key in ("precision", "recall")}
    for key, tensors in per_seq.items():
        lengths = [t.numel() for t in tensors]
        if len(set(lengths)) > 1 or lengths[0] < 2:
            raise ValueError(f"{key}_per_sequence must hold the same number (>= 2) of paired values in the row and "
                             f"every curve row, got {lengths}")
    (p_row, *precisions), (r_row, *recalls) = per_seq["precision"], per_seq["recall"]
    order = sorted(range(len(curve_rows)), key=lambda i: float(precisions[i].mean()))
    means = [float(precisions[i].mean()) for i in order]
    if any(x == y for x, y in zip(means, means[1:])):
        raise ValueError(f"curve_rows must have distinct mean precisions, got {sorted(means)}")
    p = float(p_row.mean())
    if not means[0] <= p <= means[-1]:
        return None
    k = next(k for k in range(len(order) - 1) if means[k] <= p <= means[k + 1])
    a, b = order[k], order[k + 1]
    w = (means[k + 1] - p) / (means[k + 1] - means[k])
    recall_d = r_row - w * recalls[a] - (1 - w) * recalls[b]
    precision_d = p_row - w * precisions[a] - (1 - w) * precisions[b]

    def slope(j: int) -> float:  # of the segment from sorted point j to j + 1
        return float(recalls[order[j + 1]].mean() - recalls[order[j]].mean()) / (means[j + 1] - means[j])

    at_points = [j for j in (k, k + 1) if p == means[j] and 0 < j < len(means) - 1]
    steepest = max([abs(slope(k))] + [abs(slope(j - 1)) for j in at_points] + [abs(slope(j)) for j in at_points])
    variance = recall_d.var() / recall_d.numel() + steepest**2 * precision_d.var() / precision_d.numel()
    return {"gap": float(recall_d.mean()), "se": float(variance.sqrt()), "weight": w, "between": (a, b)}


def paired_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """a − b with standard errors, for two rows of `sampler_row` form (`precision_per_sequence`,
    `recall_per_sequence`: paired tensors, same sampler seed and held-out set; `fidelity`: {order: (JS, se)};
    `typicality`: (KS, se)).  Precision and recall: paired SE std(a_i − b_i)/sqrt(N); fidelity and typicality:
    bootstrap SEs combined as if independent, sqrt(se_a² + se_b²) (conservative when a and b are positively
    correlated, as paired samplers are)."""
    out: dict[str, Any] = {}
    for key in ("precision", "recall"):
        out[key] = paired_difference(a[key + "_per_sequence"], b[key + "_per_sequence"])
    out["fidelity"] = {n: (a["fidelity"][n][0] - b["fidelity"][n][0], math.hypot(a["fidelity"][n][1], b["fidelity"][n][1]))
                       for n in a["fidelity"]}
    out["typicality"] = (a["typicality"][0] - b["typicality"][0], math.hypot(a["typicality"][1], b["typicality"][1]))
    return out


def dominance(
    a: Mapping[str, Any], b: Mapping[str, Any], *, curve: Sequence[Mapping[str, Any]] | None = None, z: float = 2.0,
) -> dict[str, Any]:
    """Whether sampler a dominates sampler b (module docstring), for rows of `paired_differences`' form.

    `curve`: b's temperature sweep as rows holding `precision_per_sequence` and `recall_per_sequence`, paired
    with a's (same sampler noise, same held-out set), or None.  a is strictly inside it when
    paired_frontier_gap(a, curve) = gap ± se has gap < −z·se.  Returns {"dominates", "reason", "better",
    "inside", "frontier_gap", "frontier_gap_se", "not_worse", "differences"}; the gap is None without a curve
    or when a's precision lies beyond it.
    """
    if not (isinstance(z, (int, float)) and z > 0):
        raise ValueError(f"z must be positive, got {z!r}")
    diffs = paired_differences(a, b)
    better = [d < -z * se for d, se in (diffs["precision"], diffs["recall"])]
    gap = None if curve is None else paired_frontier_gap(a, curve)
    inside = gap is not None and gap["gap"] < -z * gap["se"]
    not_worse = all(d < z * se for d, se in [*diffs["fidelity"].values(), diffs["typicality"]])
    common = {"better": better, "inside": inside, "frontier_gap": gap and gap["gap"],
              "frontier_gap_se": gap and gap["se"], "not_worse": not_worse, "differences": diffs}
    if all(better) or inside:
        how = "better on precision and recall" if all(better) else "strictly inside the temperature frontier"
        if not_worse:
            return {"dominates": True, "reason": how, **common}
        return {"dominates": False, "reason": f"{how}, but worse on n-gram fidelity or typicality", **common}
    return {"dominates": False, "reason": "neither better on both precision and recall nor inside the frontier", **common}
