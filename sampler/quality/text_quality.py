"""Sample quality on real text, where no exact likelihood exists: the field's protocol and ours side by side.

- **Generative perplexity per character**: the evaluator LM's summed NLL of each decoded sample divided by
  its characters, gen_nll_char = Σ_i S_i / Σ_i c_i (a ratio estimate with the delta-method SE), so models
  with different tokenizers are compared on one unit.  Per evaluator token it is the evaluator's own
  `gen_perplexity`.
- **Entropy** (the matched-entropy axis): the mean over samples of the entropy of each sample's own token
  frequencies (`sampler.data.metrics.unigram_entropy_per_sequence`); at byte or character level the tokens
  are the characters (bytes).
- **Diversity across samples**: distinct-n, the number of distinct n-grams over all samples divided by the
  number of n-grams (1 when no n-gram repeats anywhere; a collapsed sampler scores low).
- **Character n-gram fidelity**: the Jensen–Shannon divergence between the samples' pooled n-gram
  frequencies and those of held-out text (a large held-out sample stands in for the exact marginals of an
  exact source), with a bootstrap SE over samples; the held-out text's own value against a second held-out
  sample is the floor a perfect sampler reaches at that sample size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..data.base import check_tokens
from .gen_perplexity import ratio_estimate
from .fidelity import bootstrap_divergences, ngram_codes


def gen_nll_per_character(sums: Float[Tensor, " N"], texts: Sequence[str]) -> dict[str, float]:
    """gen_nll_char = Σ S_i / Σ c_i (nats per character), its SE and gen_ppl_char = exp(gen_nll_char), from the
    evaluator's summed NLLs S_i (`CausalLMEvaluator.score`) and the texts' character counts c_i."""
    if len(texts) != sums.numel():
        raise ValueError(f"sums has {sums.numel()} values for {len(texts)} texts")
    chars = torch.tensor([len(text) for text in texts], dtype=torch.float64)
    ratio = ratio_estimate(sums.double(), chars)
    return {"gen_nll_char": ratio["gen_nll"], "gen_nll_char_se": ratio["gen_nll_se"], "gen_ppl_char": ratio["gen_ppl"],
            "num_chars": ratio["num_tokens"]}


def distinct_ngrams(samples: Int[Tensor, "N L"], order: int) -> float:
    """Distinct-n: |distinct n-grams over all samples| / |n-grams| (order ≤ L)."""
    x = torch.as_tensor(samples)
    if not 1 <= order <= x.shape[1]:
        raise ValueError(f"order must be in [1, {x.shape[1]}] (the sample length), got {order!r}")
    rows = x.unfold(1, order, 1).reshape(-1, order)
    return float(torch.unique(rows, dim=0).shape[0] / rows.shape[0])


def ngram_law(tokens: Int[Tensor, "M L"], order: int, vocab_size: int) -> Float[Tensor, " C"]:
    """The pooled empirical n-gram frequencies of `tokens` over all V^n n-grams (float64, sums to 1)."""
    codes = ngram_codes(tokens, order, vocab_size).reshape(-1)
    return torch.bincount(codes, minlength=vocab_size**order).double() / codes.numel()


def text_ngram_fidelity(
    samples: Int[Tensor, "N L"], heldout: Int[Tensor, "M L"], reference: Int[Tensor, "R L"], vocab_size: int, *,
    orders: Sequence[int] = (1, 2, 3), num_bootstrap: int = 100, generator: torch.Generator | None = None,
) -> dict[int, dict[str, float]]:
    """Per order n: `js` (± `js_se`) of the samples' n-gram frequencies against the held-out law (`heldout`, a
    large held-out sample), and `reference_js` of `reference` (other held-out text of the samples' size)."""
    x = check_tokens(samples, vocab_size, "samples")
    law_tokens = check_tokens(heldout, vocab_size, "heldout")
    ref = check_tokens(reference, vocab_size, "reference")
    result: dict[int, dict[str, float]] = {}
    for order in orders:
        if vocab_size**order > 2**24:
            raise ValueError(f"order {order} with vocab_size {vocab_size} has {vocab_size**order:,} n-grams: too many "
                             "for dense counts; use a lower order")
        law = ngram_law(law_tokens, order, vocab_size)
        row: dict[str, float] = {}
        for prefix, data in (("", x), ("reference_", ref)):
            value, se = bootstrap_divergences(ngram_codes(data, order, vocab_size), law, num_bootstrap, generator)["js"]
            row[prefix + "js"], row[prefix + "js_se"] = value, se
        result[order] = row
    return result


__all__ = ["gen_nll_per_character", "distinct_ngrams", "ngram_law", "text_ngram_fidelity"]
