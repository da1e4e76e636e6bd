"""The embedded exact-likelihood source (`HiddenMarkovSource`, spec "exact") and its exact posterior (`ExactDenoiser`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .base import DEFAULT_SEQ_LEN, ExactSource, _categorical, _check_int, check_tokens

_HMM_SYMBOLS = "etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,;:!?-+*/=<>()[]{}@#$%&"

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

    decodes_to_text = False  # decode() writes token ids as letters: a hidden Markov chain has no text

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
        x = check_tokens(x, self.vocab_size)
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

    def __init__(self, source: ExactSource, mask_id: int, dtype: torch.dtype = torch.float32) -> None:
        self.source = source
        self.mask_id = mask_id
        self.vocab_size = source.vocab_size
        self.dtype = dtype

    def __call__(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"] | None = None) -> Float[Tensor, "B L K"]:
        if t is not None and tuple(t.shape) != (z.shape[0],):
            raise ValueError(f"t must have shape ({z.shape[0]},), got {tuple(t.shape)}")
        return self.source.posterior_log_probs(z, self.mask_id).to(self.dtype)
