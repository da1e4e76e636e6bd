"""A large-effect exact-likelihood source: one token repeated along the sequence (`RepeatSource`, spec "repeat").

A shared token c is drawn uniformly from the V real tokens; each of the L positions copies it,
except that with probability ε (``noise``) a copy is replaced by a fresh uniform token (which may
equal c again):

    p(x_{1:L}) = (1/V) Σ_c Π_l p(x_l | c),    p(x_l | c) = (1 − ε)·[x_l = c] + ε/V.

Every position is maximally dependent on every other, so a sampler that reveals several tokens
in one step independently from their marginals almost never produces a consistent sequence
(the factorisation error the Infinite Mask Diffusion paper shows on the same task).  With
ε = 0 the law is uniform over the V constant sequences and every other sequence has
probability 0 (log p = −inf); ε > 0 gives every sequence finite log p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .base import ExactSource, _check_int, check_tokens
from .hmm import ExactDenoiser

REPEAT_DEFAULT_SEQ_LEN = 10


class RepeatSource(ExactSource):
    """One uniform token c repeated at every position, each copy replaced by a uniform token with
    probability ``noise`` (ε).  ``seed`` is accepted (and recorded) for ``get_source``; the law does not
    depend on it.  Exact ``log_prob``, exact posterior denoiser, exact probability of agreement."""

    default_seq_len = REPEAT_DEFAULT_SEQ_LEN

    def __init__(self, seed: int = 0, seq_len: int = REPEAT_DEFAULT_SEQ_LEN, vocab_size: int = 1024,
                 noise: float | int = 0.0) -> None:
        self.seed = _check_int(seed, "seed", 0)
        self.default_seq_len = _check_int(seq_len, "seq_len", 1)
        self.vocab_size = _check_int(vocab_size, "vocab_size", 2)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= float(noise) <= 1.0:
            raise ValueError(f"noise must be a number in [0, 1], got {noise!r}")
        self.noise = float(noise)
        self.name = f"repeat(V={self.vocab_size},noise={self.noise})"
        self._entropy_cache = {}
        V, eps = self.vocab_size, self.noise
        # log p(x_l | c) when x_l = c (log_match) and when x_l != c (log_other; −inf at ε = 0)
        self._log_match = math.log((1.0 - eps) + eps / V)
        self._log_other = math.log(eps / V) if eps > 0 else -math.inf

    def _log_copies(self, matches: Tensor, others: Tensor) -> Tensor:
        """matches·log p(c | c) + others·log p(v ≠ c | c), with 0·(−inf) read as 0 (float64)."""
        other_term = torch.where(others > 0, others.double() * self._log_other, torch.zeros((), dtype=torch.float64))
        return matches.double() * self._log_match + other_term

    def sample_batch(self, batch_size: int, seq_len: int | None = None,
                     generator: torch.Generator | None = None, split: str = "train") -> Int[Tensor, "B L"]:
        """c uniform per sequence, then each copy replaced with probability ε by a uniform token (float64 uniforms).
        ``split`` is accepted for interface compatibility: every draw is fresh."""
        n = _check_int(batch_size, "batch_size", 1)
        length = self._seq_len(seq_len)
        shared = torch.randint(self.vocab_size, (n, 1), generator=generator, dtype=torch.int64)
        replaced = torch.rand(n, length, dtype=torch.float64, generator=generator) < self.noise
        fresh = torch.randint(self.vocab_size, (n, length), generator=generator, dtype=torch.int64)
        return torch.where(replaced, fresh, shared.expand(n, length))

    def log_prob(self, x: Int[Tensor, "N L"]) -> Float[Tensor, " N"]:
        """Exact log p(x) in float64 without a V-sized sum.

        With n_c the count of c in x and D the number of distinct tokens of x,
        p(x) = (1/V) [Σ_{c in x} e^{n_c a + (L − n_c) b} + (V − D) e^{L b}],  a = log(1 − ε + ε/V), b = log(ε/V).
        The sum over the distinct tokens is taken over positions as Σ_l f(n_{x_l}) / n_{x_l}.
        """
        x = check_tokens(x, self.vocab_size)
        length = x.shape[1]
        counts = (x[:, :, None] == x[:, None, :]).sum(-1)  # n_{x_l}: copies of x_l in x
        present = self._log_copies(counts, length - counts) - counts.double().log()
        distinct = (1.0 / counts.double()).sum(1)
        absent_count = (self.vocab_size - distinct).round()
        absent = torch.where(absent_count > 0, absent_count.log() + self._log_copies(torch.zeros_like(counts[:, 0]),
                             torch.full_like(counts[:, 0], length)), torch.full_like(distinct, -math.inf))
        return torch.logsumexp(torch.cat([present, absent[:, None]], dim=1), dim=1) - math.log(self.vocab_size)

    def agreement_probability(self, seq_len: int | None = None) -> float:
        """P(all L tokens equal) = (1 − ε + ε/V)^L + (V − 1)(ε/V)^L (the shared token kept or replaced
        everywhere by one other token)."""
        length = self._seq_len(seq_len)
        V = self.vocab_size
        return math.exp(length * self._log_match) + (V - 1) * math.exp(length * self._log_other)

    def shared_token_log_posterior(self, z: Int[Tensor, "B L"], mask_id: int) -> Float[Tensor, "B V"]:
        """log p(c | visible tokens of z) ∝ n_c a + (m − n_c) b, with m the number of visible tokens and n_c how
        many of them equal c (float64).

        At ε = 0 a z whose visible tokens differ has probability 0 (a per-token-independent sampler makes such
        states); there the posterior is its limit as ε → 0+, uniform over the most frequent visible tokens,
        so that sampling can go on.  For every z of positive probability this is the exact posterior."""
        visible = z != mask_id
        counts = torch.zeros(z.shape[0], self.vocab_size, dtype=torch.int64)
        counts.scatter_add_(1, torch.where(visible, z, 0), visible.long())
        if self.noise == 0.0:
            log_weight = torch.where(counts == counts.max(dim=1, keepdim=True).values, 0.0, -math.inf).double()
        else:
            log_weight = self._log_copies(counts, visible.sum(1, keepdim=True) - counts)
        return log_weight - torch.logsumexp(log_weight, dim=1, keepdim=True)

    def posterior_log_probs(self, z: Int[Tensor, "B L"], mask_id: int | None = None) -> Float[Tensor, "B L K"]:
        """The exact denoiser: log p(x_l | visible tokens of z), SUBS convention, float64.

        Masked position (at ε = 0 and a z of probability 0, the ε → 0+ limit, see
        `shared_token_log_posterior`): p(x_l = v | z) = (1 − ε) p(c = v | z) + ε/V (the same row at every masked position),
        taken as logaddexp(log(1 − ε) + log p(c = v | z), log(ε/V)).  Visible positions get log-prob 0 on
        their token and −inf elsewhere.  ``mask_id`` defaults to vocab_size.  Cost O(B·L·V).
        """
        V = self.vocab_size
        mask_id = V if mask_id is None else mask_id
        if isinstance(mask_id, bool) or not isinstance(mask_id, (int, np.integer)) or 0 <= int(mask_id) < V:
            raise ValueError(f"mask_id must be an int outside the real tokens 0..{V - 1}, got {mask_id!r}")
        if not isinstance(z, Tensor) or z.dim() != 2 or z.is_floating_point():
            raise ValueError(f"z must be an integer tensor of shape (B, L), got {getattr(z, 'shape', z)!r}")
        device = z.device
        z = z.to("cpu", torch.int64)
        masked = z == int(mask_id)
        if ((~masked) & ((z < 0) | (z >= V))).any():
            raise ValueError(f"z holds ids outside 0..{V - 1} other than mask_id={mask_id} (vocab_size={V})")
        log_shared = self.shared_token_log_posterior(z, int(mask_id))
        keep = math.log1p(-self.noise) if self.noise < 1 else -math.inf
        row = torch.logaddexp(log_shared + keep, torch.tensor(self._log_other, dtype=torch.float64))
        out = row[:, None, :].expand(z.shape[0], z.shape[1], V).clone()
        visible_rows, visible_cols = (~masked).nonzero(as_tuple=True)
        out[visible_rows, visible_cols] = -math.inf
        out[visible_rows, visible_cols, z[visible_rows, visible_cols]] = 0.0
        return out.to(device)

    def denoiser(self, mask_id: int | None = None, dtype: torch.dtype = torch.float32) -> ExactDenoiser:
        """The Bayes-optimal denoiser (z, t) -> log p(x0 | z) of this source (t is ignored)."""
        return ExactDenoiser(self, self.vocab_size if mask_id is None else mask_id, dtype)

    def decode(self, ids: Any) -> str:
        return " ".join(str(int(v)) for v in np.asarray(ids, dtype=np.int64).reshape(-1))

    def describe(self) -> dict:
        return {"spec": "repeat", "seed": self.seed, "seq_len": self.default_seq_len,
                "vocab_size": self.vocab_size, "noise": self.noise}
