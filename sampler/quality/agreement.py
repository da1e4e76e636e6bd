"""Exact agreement: the fraction of samples whose tokens are all equal (the repeat source's consistency test).

On `sampler.data.RepeatSource` a true sequence is constant with probability
P(all equal) = (1 − ε + ε/V)^L + (V − 1)(ε/V)^L (1 at ε = 0); a per-token-independent sampler that reveals
several tokens in one step from their marginals almost never is.  Given the source, the rate is reported
beside that reference and as a ratio to it (1 for a sampler with the source's law).
"""

from __future__ import annotations

import math
from typing import Any

from jaxtyping import Int
from torch import Tensor

from sampler.data.base import check_tokens


def exact_agreement_rate(x: Int[Tensor, "N L"], source: Any = None) -> dict[str, Any]:
    """{"rate", "se", "agreeing", "num_samples"}: the fraction r of rows of `x` whose tokens are all equal and
    its binomial standard error sqrt(r(1 − r)/N).  With a `source` that has `agreement_probability(seq_len)`
    (a `RepeatSource`) also "reference" (the source's own P(all equal) at this length) and
    "relative" = rate / reference."""
    if source is not None and not callable(getattr(source, "agreement_probability", None)):
        raise ValueError(f"source must have agreement_probability(seq_len) (a RepeatSource), got "
                         f"{getattr(source, 'name', type(source).__name__)!r}")
    tokens = check_tokens(x, source.vocab_size if source is not None else 2**62)
    num_samples, seq_len = tokens.shape
    if num_samples < 1:
        raise ValueError("x must hold at least one sequence")
    agreeing = int((tokens == tokens[:, :1]).all(dim=1).sum())
    rate = agreeing / num_samples
    result: dict[str, Any] = {"rate": rate, "se": math.sqrt(rate * (1.0 - rate) / num_samples),
                              "agreeing": agreeing, "num_samples": num_samples}
    if source is not None:
        reference = float(source.agreement_probability(seq_len))
        result.update(reference=reference, relative=rate / reference)
    return result
