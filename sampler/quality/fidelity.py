"""n-gram fidelity and typicality of samples from a source with exact likelihood.

- Exact n-gram marginals (`exact_ngram_marginals`): the law of n adjacent tokens at a uniformly random
  start l in 0..L−n, P_n(a) = (1/(L−n+1)) Σ_l P(x_{l:l+n} = a), computed from the source's parameters
  (never estimated).  Index of an n-gram a_1..a_n: Σ_j a_j V^{n−j} (row-major, last token fastest).
- n-gram fidelity (`ngram_fidelity`): divergences between the pooled n-gram frequencies f of the
  samples and P_n, beside the values that as many fresh true sequences get (the reference):
    JS(f, P)    = ½ Σ f log(f/m) + ½ Σ P log(P/m),  m = (f + P)/2   (nats, at most log 2),
    KL(f ‖ P)   = Σ_{f>0} f log(f/P),
    KL(P ‖ f̃)  with f̃ = (c + ½)/(Σc + ½·V^n)   (counts c; the add-½ smoothing keeps it finite).
  Standard errors by bootstrap over sequences.
- Typicality (`typicality`): the two-sample Kolmogorov–Smirnov statistic between per-sequence
  −log p(x)/L of the samples and of fresh true sequences, its p-value, and a bootstrap standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from scipy.stats import ks_2samp
from torch import Tensor

from sampler.data import DataSource, HiddenMarkovSource, NGramSource
from sampler.data.base import check_tokens

MAX_NGRAM_CELLS = 2**22  # V**n cells of one n-gram table (32 MiB in float64)
KL_SMOOTHING = 0.5  # add-½ (Krichevsky–Trofimov) counts in KL(P ‖ f̃)


def check_ngram_orders(orders: Any, seq_len: int, vocab_size: int, name: str = "ngram_orders") -> tuple[int, ...]:
    """Orders as a tuple of distinct ints in 1..seq_len whose tables have at most MAX_NGRAM_CELLS cells."""
    if isinstance(orders, (int, str)) or not isinstance(orders, Sequence) or len(orders) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {orders!r}")
    for order in orders:
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"{name} must hold ints >= 1, got {order!r}")
        if order > seq_len:
            raise ValueError(f"{name} holds {order}, longer than the sequences (seq_len={seq_len})")
        if vocab_size**order > MAX_NGRAM_CELLS:
            raise ValueError(f"{name} holds {order}: a table of {vocab_size}^{order} cells exceeds {MAX_NGRAM_CELLS}")
    return tuple(dict.fromkeys(orders))


def exact_ngram_marginals(source: DataSource, order: int, seq_len: int | None = None) -> Float[Tensor, " C"]:
    """P_n(a) averaged over the L−n+1 start positions (float64, V^n cells, row-major), from the
    source's parameters: the forward recursion of a HiddenMarkovSource, the context law of an NGramSource."""
    length = source.default_seq_len if seq_len is None else seq_len
    check_ngram_orders((order,), length, source.vocab_size, "order")
    if isinstance(source, HiddenMarkovSource):
        return _hmm_ngram_marginals(source, order, length)
    if isinstance(source, NGramSource):
        return _ngram_chain_marginals(source, order, length)
    raise ValueError(f"source: exact n-gram marginals are implemented for HiddenMarkovSource and NGramSource, "
                     f"not {type(source).__name__} ({getattr(source, 'name', '?')})")


def _hmm_ngram_marginals(source: HiddenMarkovSource, order: int, length: int) -> Float[Tensor, " C"]:
    """(state, token) is a Markov chain: m_{l+1}(r, y) = Σ_{s,x} m_l(s, x) A(s, r) e(y | r, x),
    m_0(s, x) = π(s) e(x | s, BOS).  Average m_l over the starts, then extend by n−1 tokens the same way."""
    V, S = source.vocab_size, source.num_states
    transition, emission = source.transition, source.emission[:, :V, :]
    marginal = source.initial[:, None] * source.emission[:, V, :]
    starts = length - order + 1
    total = torch.zeros(S, V, dtype=torch.float64)
    for _ in range(starts):
        total += marginal
        marginal = torch.einsum("sx,sr,rxy->ry", marginal, transition, emission)
    joint = total / starts  # (state, last token) at a uniform start
    for _ in range(order - 1):
        joint = torch.einsum("spx,sr,rxy->rpxy", joint.reshape(S, -1, V), transition, emission).reshape(S, -1)
    return joint.sum(0)


def _ngram_chain_marginals(source: NGramSource, order: int, length: int) -> Float[Tensor, " C"]:
    """Push the law of the last w = max(n, order_chain − 1) tokens forward one token at a time
    (p_{min(t, order_chain)}(x_t | previous tokens)), dropping the oldest once the window is full."""
    V, width = source.vocab_size, max(order, source.order - 1)
    law = source.tables[0][0].clone()
    window = 1
    total = torch.zeros(V**order, dtype=torch.float64)
    for position in range(length):
        if position > 0:
            k = min(position + 1, source.order)
            table = source.tables[k - 1]
            law = (law.reshape(-1, V ** (k - 1))[:, :, None] * table[None]).reshape(-1)
            window += 1
            if window > width:
                law = law.reshape(V, -1).sum(0)
                window -= 1
        if position >= order - 1:
            total += law.reshape(-1, V**order).sum(0)
    return total / (length - order + 1)


def ngram_codes(x: Int[Tensor, "N L"], order: int, vocab_size: int) -> Int[Tensor, "N M"]:
    """Index Σ_j x_{l+j} V^{n−1−j} of every adjacent n-gram (M = L − n + 1 per sequence)."""
    count = x.shape[1] - order + 1
    codes = torch.zeros(x.shape[0], count, dtype=torch.int64)
    for j in range(order):
        codes = codes * vocab_size + x[:, j: j + count]
    return codes


def ngram_divergences(counts: Float[Tensor, "R C"], exact: Float[Tensor, " C"]) -> dict[str, Tensor]:
    """JS(f, P), KL(f ‖ P) and KL(P ‖ f̃) (module docstring) for each row of n-gram counts."""
    total = counts.sum(dim=1, keepdim=True)
    freq = counts / total
    mid = (freq + exact) / 2
    p_log = torch.where(exact > 0, exact * (exact / mid).log(), 0.0)
    f_log_mid = torch.where(freq > 0, freq * (freq / mid).log(), 0.0)
    f_log_exact = torch.where(freq > 0, freq * (freq / exact).log(), 0.0)
    smoothed = (counts + KL_SMOOTHING) / (total + KL_SMOOTHING * counts.shape[1])
    return {
        "js": 0.5 * (f_log_mid.sum(1) + p_log.sum(1)),
        "kl_samples_exact": f_log_exact.sum(1),
        "kl_exact_samples": torch.where(exact > 0, exact * (exact / smoothed).log(), 0.0).sum(1),
    }


def bootstrap_divergences(
    codes: Int[Tensor, "N M"], exact: Float[Tensor, " C"], num_bootstrap: int, generator: torch.Generator | None,
) -> dict[str, tuple[float, float]]:
    """(value on the data, bootstrap SE over sequences) of each divergence; replicates in chunks."""
    n, cells = codes.shape[0], exact.numel()
    full = torch.bincount(codes.reshape(-1), minlength=cells).double()[None]
    values = {key: float(v[0]) for key, v in ngram_divergences(full, exact).items()}
    replicates: dict[str, list[Tensor]] = {key: [] for key in values}
    for start in range(0, num_bootstrap, 32):
        chunk = min(32, num_bootstrap - start)
        picks = torch.randint(n, (chunk, n), generator=generator)
        weights = torch.zeros(chunk, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(chunk, n, dtype=torch.float64))
        flat = (torch.arange(chunk)[:, None, None] * cells + codes[None]).reshape(-1)
        counts = torch.bincount(flat, weights=weights[:, :, None].expand(-1, -1, codes.shape[1]).reshape(-1),
                                minlength=chunk * cells).reshape(chunk, cells)
        for key, v in ngram_divergences(counts, exact).items():
            replicates[key].append(v)
    return {key: (values[key], float(torch.cat(replicates[key]).std()) if num_bootstrap > 1 else math.inf)
            for key in values}


def ngram_fidelity(
    samples: Int[Tensor, "N L"], source: DataSource, reference: Int[Tensor, "M L"], *,
    orders: Sequence[int] = (1, 2, 3), num_bootstrap: int = 200, generator: torch.Generator | None = None,
) -> dict[int, dict[str, float]]:
    """Per order n: `js`, `kl_samples_exact`, `kl_exact_samples` of the samples and `reference_*` of the
    true `reference` sequences, each with `*_se` (bootstrap over sequences, `num_bootstrap` replicates)."""
    x = check_tokens(samples, source.vocab_size, "samples")
    ref = check_tokens(reference, source.vocab_size, "reference")
    orders = check_ngram_orders(orders, x.shape[1], source.vocab_size)
    result: dict[int, dict[str, float]] = {}
    for order in orders:
        exact = exact_ngram_marginals(source, order, x.shape[1])
        row: dict[str, float] = {}
        for prefix, data in (("", x), ("reference_", ref)):
            stats = bootstrap_divergences(ngram_codes(data, order, source.vocab_size), exact, num_bootstrap, generator)
            for key, (value, se) in stats.items():
                row[prefix + key], row[prefix + key + "_se"] = value, se
        result[order] = row
    return result


def typicality(
    samples_nll: Float[Tensor, " N"], reference_nll: Float[Tensor, " M"], *, num_bootstrap: int = 200,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Two-sample KS statistic sup_y |F_samples(y) − F_reference(y)| between per-sequence −log p/L values,
    its p-value (scipy.stats.ks_2samp, two-sided) and a bootstrap SE (both sets resampled)."""
    a, b = samples_nll.double(), reference_nll.double()
    test = ks_2samp(a.numpy(), b.numpy())
    replicates = []
    for _ in range(num_bootstrap):
        ia = torch.randint(len(a), (len(a),), generator=generator)
        ib = torch.randint(len(b), (len(b),), generator=generator)
        replicates.append(ks_2samp(a[ia].numpy(), b[ib].numpy()).statistic)
    se = float(torch.tensor(replicates, dtype=torch.float64).std()) if num_bootstrap > 1 else math.inf
    return {"ks": float(test.statistic), "ks_se": se, "p_value": float(test.pvalue)}
