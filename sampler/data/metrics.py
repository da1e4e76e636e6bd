"""Sample-quality metrics: exact NLL and its excess over the entropy rate, unigram entropy,
paired differences over shared sampler seeds, the temperature frontier at matched entropy."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .base import DataSource, check_tokens

def unigram_entropy_per_sequence(samples: Int[Tensor, "N L"], vocab_size: int) -> Float[Tensor, " N"]:
    """Entropy (nats) of each sequence's empirical token distribution: -sum_v f_v log f_v.

    Bounded by log min(L, V); a sampler that collapses to repetitions scores low.
    """
    x = check_tokens(samples, vocab_size, "samples")
    counts = torch.zeros(x.shape[0], vocab_size, dtype=torch.float64)
    counts.scatter_add_(1, x, torch.ones_like(x, dtype=torch.float64))
    freq = counts / x.shape[1]
    return -(torch.where(freq > 0, freq * freq.log(), torch.zeros_like(freq))).sum(1)


def pooled_unigram_entropy(samples: Int[Tensor, "N L"], vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies pooled over all samples (catches mode collapse across samples)."""
    x = check_tokens(samples, vocab_size, "samples")
    freq = torch.bincount(x.reshape(-1), minlength=vocab_size).double() / x.numel()
    freq = freq[freq > 0]
    return float(-(freq * freq.log()).sum())


def _mean_se(values: Tensor) -> tuple[float, float]:
    n = values.numel()
    if n == 0:
        raise ValueError("need at least one value for a mean")
    mean = float(values.double().mean())
    se = float(values.double().std() / math.sqrt(n)) if n > 1 else float("inf")
    return mean, se


def sample_quality(samples: Int[Tensor, "N L"], source: DataSource,
                   entropy_rate: tuple[float, float] | None = None) -> dict:
    """Quality of generated samples, two numbers with standard errors: fit and diversity.

    Always: ``unigram_entropy`` = mean over sequences of the per-sequence unigram
    entropy (nats) and its SE, ``pooled_unigram_entropy``, ``per_sequence_entropy``.
    For an exact source also: ``nll_per_token`` = mean_i(-log p(x_i) / L) under the true
    source, ``nll_se`` = std/sqrt(N), ``entropy_rate`` (+ ``entropy_rate_se``),
    ``excess`` = nll_per_token − entropy_rate (optimum 0) with ``excess_se`` (both SEs
    combined; they are independent), and ``per_sequence_nll`` (tensor, for
    ``paired_difference``).  Tensors are left out by ``json_ready``.
    """
    x = check_tokens(samples, source.vocab_size, "samples")
    per_seq_entropy = unigram_entropy_per_sequence(x, source.vocab_size)
    ent_mean, ent_se = _mean_se(per_seq_entropy)
    result: dict[str, Any] = {
        "num_samples": int(x.shape[0]), "seq_len": int(x.shape[1]),
        "unigram_entropy": ent_mean, "unigram_entropy_se": ent_se,
        "pooled_unigram_entropy": pooled_unigram_entropy(x, source.vocab_size),
        "per_sequence_entropy": per_seq_entropy,
    }
    if source.exact:
        per_seq_nll = -source.log_prob(x) / x.shape[1]
        if not torch.isfinite(per_seq_nll).all():
            raise ValueError("samples have zero probability under the source (infinite NLL)")
        nll, nll_se = _mean_se(per_seq_nll)
        rate, rate_se = entropy_rate if entropy_rate is not None else source.entropy_rate(x.shape[1])
        result.update({
            "nll_per_token": nll, "nll_se": nll_se, "entropy_rate": rate, "entropy_rate_se": rate_se,
            "excess": nll - rate, "excess_se": math.sqrt(nll_se**2 + rate_se**2),
            "per_sequence_nll": per_seq_nll,
        })
    return result


def no_exact_likelihood(source: DataSource) -> str | None:
    """None when `source` has exact likelihood; else the reason (naming the source) with which every metric
    that needs it (NLL under the source, recall, n-gram fidelity, typicality) is reported as unavailable,
    never as zero."""
    if getattr(source, "exact", False):
        return None
    return f"source {getattr(source, 'name', source)} has no exact likelihood"


def json_ready(value: Any, drop_key: Callable[[str], bool] | None = None, keep_tensors: bool = False) -> Any:
    """``value`` ready for strict JSON (the project's one converter), recursively: dict keys become strings, and a
    key for which ``drop_key(key)`` is true is left out with its value; tuples become lists; NaN and ±inf become
    None (JSON null: strict JSON has no NaN); one-element tensors and numpy scalars become Python numbers; numpy
    arrays become lists; a larger tensor (per-sequence values) is left out of a dict and becomes None inside a list
    (positions kept), or a list with ``keep_tensors``; None, bool, int and str are kept; anything else becomes
    its str()."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return json_ready(value.item())
        return json_ready(value.tolist()) if keep_tensors else None
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_ready(item, drop_key, keep_tensors) for key, item in value.items()
                if not (drop_key is not None and drop_key(str(key)))
                and not (isinstance(item, Tensor) and item.numel() != 1 and not keep_tensors)}
    if isinstance(value, (list, tuple)):
        return [json_ready(item, drop_key, keep_tensors) for item in value]
    return value if value is None or isinstance(value, str) else str(value)


def strict_json(value: Any, **dumps_options: Any) -> str:
    """json.dumps(json_ready(value), allow_nan=False, **dumps_options): every JSON file the project writes."""
    return json.dumps(json_ready(value), allow_nan=False, **dumps_options)


def paired_difference(a_per_seq: Any, b_per_seq: Any) -> tuple[float, float]:
    """Mean of a − b over paired items and its standard error std(a − b)/sqrt(N).

    Pair by construction: sample both models with the same sampler seed (same masking
    order and random stream), so shared noise cancels in the difference.
    """
    a = torch.as_tensor(a_per_seq, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b_per_seq, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a_per_seq and b_per_seq must have the same length, got {a.numel()} and {b.numel()}")
    if a.numel() < 2:
        raise ValueError(f"a_per_seq must hold at least 2 paired values, got {a.numel()}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("a_per_seq and b_per_seq must be finite")
    return _mean_se(a - b)


def frontier_at_entropy(frontier_points: Sequence[Any], entropy: float | int, outside: str = "error") -> float:
    """The teacher's NLL at a given sample entropy, by linear interpolation along its frontier.

    ``frontier_points``: (entropy, nll) pairs or dicts with keys ``unigram_entropy`` and
    ``nll_per_token`` (e.g. one per temperature of ``mcd eval``).  Points are sorted by
    entropy; where several share an entropy their NLLs are averaged.  Outside the covered
    entropy range: ``outside="error"`` raises ValueError, ``"clip"`` returns the end
    point's NLL, ``"linear"`` extrapolates from the two nearest points.
    """
    if outside not in ("error", "clip", "linear"):
        raise ValueError(f"outside must be 'error', 'clip' or 'linear', got {outside!r}")
    pairs = []
    for point in frontier_points:
        if isinstance(point, dict):
            pairs.append((float(point["unigram_entropy"]), float(point["nll_per_token"])))
        else:
            e, n = point
            pairs.append((float(e), float(n)))
    if not pairs:
        raise ValueError("frontier_points must hold at least one point")
    if not all(math.isfinite(e) and math.isfinite(n) for e, n in pairs):
        raise ValueError(f"frontier_points must be finite, got {pairs!r}")
    if not math.isfinite(float(entropy)):
        raise ValueError(f"entropy must be finite, got {entropy!r}")
    xs = np.array(sorted({e for e, _ in pairs}))
    ys = np.array([np.mean([n for e, n in pairs if e == x]) for x in xs])
    entropy = float(entropy)
    if xs[0] <= entropy <= xs[-1]:
        return float(np.interp(entropy, xs, ys))
    if outside == "error" or (outside == "linear" and len(xs) < 2):
        if outside == "error":
            raise ValueError(f"entropy={entropy} lies outside the frontier's range [{xs[0]}, {xs[-1]}]; "
                             "sweep more temperatures or pass outside='clip'")
        return float(ys[0] if entropy < xs[0] else ys[-1])
    if outside == "clip":
        return float(ys[0] if entropy < xs[0] else ys[-1])
    i = 0 if entropy < xs[0] else len(xs) - 2
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return float(ys[i] + slope * (entropy - xs[i]))
