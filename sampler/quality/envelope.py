"""The floor drawn as the lower envelope of several sampler families in the (precision, recall) plane.

Both axes are "lower is better" (precision E_q[−log p]/L, recall −log q_N(x)/L of held-out data), so a row
is dominated when another row is no worse on both and strictly better on one; the envelope is the rows no
other row dominates (the Pareto set), ordered by precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _coordinate(row: Any, key: str, index: int) -> float:
    if not isinstance(row, Mapping) or key not in row:
        raise ValueError(f"rows[{index}] must be a mapping with a {key!r} entry, got {row!r}")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"rows[{index}][{key!r}] must be a number (not NaN), got {value!r}")
    return float(value)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is no worse than b on both axes and strictly better on one (lower is better)."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def lower_envelope(rows: Sequence[Mapping[str, Any]], x: str = "precision", y: str = "recall") -> list[Mapping[str, Any]]:
    """The rows that no other row dominates on (x, y), sorted by x then y (input order among equal points).
    Equal points do not dominate each other, so both stay.  +inf is allowed (a recall of +inf, e.g. top-p);
    NaN or a missing entry is refused, naming the row."""
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
        raise ValueError(f"rows must be a sequence of mappings, got {type(rows).__name__}")
    points = [(_coordinate(row, x, i), _coordinate(row, y, i)) for i, row in enumerate(rows)]
    kept = [i for i, point in enumerate(points) if not any(dominates(other, point) for other in points)]
    kept.sort(key=lambda i: (points[i][0], points[i][1], i))
    return [rows[i] for i in kept]
