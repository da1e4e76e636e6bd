"""`NGramSource` (spec "ngram:CORPUS"): an exact character n-gram chain fitted on real text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from . import text as textlib
from .base import DEFAULT_SEQ_LEN, ExactSource, _categorical, _check_int, check_tokens

class NGramSource(ExactSource):
    """A character n-gram chain fitted on a corpus; exact log-prob and exact entropy rate.

    Hierarchical Dirichlet smoothing (each order backs off to the next lower one):
    p_1(x) = (c(x) + beta/V) / (N + beta),
    p_k(x | c) = (c(c, x) + beta · p_{k-1}(x | suffix of c)) / (c(c) + beta),
    with counts over all positions of the corpus.  A sequence uses the shorter
    contexts at its start: p(x_{1:L}) = prod_t p_{min(t, n)}(x_t | x_{t-n+1:t-1}).
    Every probability is positive, so any sequence has finite log p.
    """

    def __init__(self, corpus: str, order: int = 3, smoothing: float | int = 1.0, seed: int = 0,
                 seq_len: int = DEFAULT_SEQ_LEN, text: str | None = None) -> None:
        self.corpus = corpus
        self.order = _check_int(order, "order", 1)
        if not (isinstance(smoothing, (int, float)) and float(smoothing) > 0 and math.isfinite(float(smoothing))):
            raise ValueError(f"smoothing must be a positive number, got {smoothing!r}")
        self.smoothing = float(smoothing)
        self.seed = _check_int(seed, "seed", 0)
        self.default_seq_len = _check_int(seq_len, "seq_len", 1)
        raw = textlib.read_corpus(corpus) if text is None else text
        normalised = textlib.normalise_text(raw)
        if len(normalised) < self.order + 1:
            raise ValueError(f"corpus={corpus!r} has {len(normalised)} usable characters after normalisation; "
                             f"need more than order={self.order}")
        self.tokenizer = textlib.CharTokenizer(textlib.NORMALISED_ALPHABET)
        self.vocab_size = self.tokenizer.vocab_size
        if self.vocab_size ** self.order > 2**25:
            raise ValueError(f"order={order} needs a table of {self.vocab_size}^{order} entries; use order <= "
                             f"{int(math.log(2**25) / math.log(self.vocab_size))}")
        self.name = f"ngram(order={self.order},corpus={corpus})"
        self._entropy_cache = {}
        self._fit(self.tokenizer.encode(normalised))

    def _fit(self, ids: np.ndarray) -> None:
        V, beta = self.vocab_size, self.smoothing
        unigram = (np.bincount(ids, minlength=V) + beta / V) / (len(ids) + beta)
        tables = [unigram.reshape(1, V)]
        for k in range(2, self.order + 1):
            code = np.zeros(len(ids) - k + 1, dtype=np.int64)
            for j in range(k):
                code = code * V + ids[j: len(ids) - k + 1 + j]
            counts = np.bincount(code, minlength=V**k).reshape(V ** (k - 1), V).astype(np.float64)
            backoff = tables[-1][np.arange(V ** (k - 1)) % V ** (k - 2)]
            tables.append((counts + beta * backoff) / (counts.sum(1, keepdims=True) + beta))
        self.tables = [torch.from_numpy(t) for t in tables]
        self._log_tables = [t.log() for t in self.tables]
        self._cum_tables = [t.cumsum(1) for t in self.tables]

    def _context_codes(self, x: Tensor, position: int) -> tuple[int, Tensor]:
        k = min(position + 1, self.order)  # order of the conditional used at this position
        code = torch.zeros(x.shape[0], dtype=torch.int64)
        for j in range(position - k + 1, position):
            code = code * self.vocab_size + x[:, j]
        return k, code

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        n = _check_int(batch_size, "batch_size", 1)
        length = self._seq_len(seq_len)
        tokens = torch.zeros(n, length, dtype=torch.int64)
        for position in range(length):
            k, code = self._context_codes(tokens, position)
            tokens[:, position] = _categorical(self._cum_tables[k - 1][code], generator)
        return tokens

    def log_prob(self, x: Int[Tensor, "N L"]) -> Float[Tensor, " N"]:
        """log p(x) = sum_t log p_{min(t,n)}(x_t | previous min(t,n)-1 tokens), in float64."""
        x = check_tokens(x, self.vocab_size)
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for position in range(x.shape[1]):
            k, code = self._context_codes(x, position)
            total += self._log_tables[k - 1][code, x[:, position]]
        return total

    def entropy_rate(self, seq_len: int | None = None, num_samples: int = 16384,
                     seed: int = 1234) -> tuple[float, float]:
        """Exact H(X_{1:L}) / L (standard error 0), by propagating the law of the context.

        H(X_{1:L}) = sum_t E_{c_t}[H(p(· | c_t))], with the law of the context c_t (the
        last min(t, n) − 1 tokens) pushed forward one token at a time.
        """
        length = self._seq_len(seq_len)
        V = self.vocab_size
        context_law = torch.ones(1, dtype=torch.float64)  # empty context
        total = 0.0
        for position in range(length):
            k = min(position + 1, self.order)
            table = self.tables[k - 1]
            row_entropy = -(table * self._log_tables[k - 1]).sum(1)
            total += float(context_law @ row_entropy)
            joint = context_law[:, None] * table  # law of (context, next token)
            keep = min(k, self.order - 1)  # length of the next context
            next_codes = (torch.arange(joint.shape[0])[:, None] * V + torch.arange(V)[None, :]) % (V**keep)
            context_law = torch.zeros(V**keep, dtype=torch.float64).index_add_(
                0, next_codes.reshape(-1), joint.reshape(-1))
        return total / length, 0.0

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        return {"spec": f"ngram:{self.corpus}", "seed": self.seed, "seq_len": self.default_seq_len,
                "order": self.order, "smoothing": self.smoothing}
