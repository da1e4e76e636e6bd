"""The exact toy data distribution of claim 9 (a short Markov chain, enumerated)."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

class MarkovToy:
    """A tiny exact data distribution: a Markov chain over K = 3 tokens, length L = 4, with every
    quantity the ELBO needs computed by enumeration over the 81 sequences and 16 mask patterns:
    the exact denoiser p(x0_l | z) (posterior marginal given the visible tokens), and the moments
    of X = Σ_{l masked} −log p(x0_l | z) under q(z | x0) at any α."""

    vocab_size = 3
    length = 4
    initial = np.array([0.5, 0.3, 0.2])
    transition = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])

    def __init__(self) -> None:
        K, L = self.vocab_size, self.length
        grids = np.meshgrid(*[np.arange(K)] * L, indexing="ij")
        self.sequences = np.stack([g.reshape(-1) for g in grids], axis=1)  # (K^L, L)
        probs = self.initial[self.sequences[:, 0]].copy()
        for l in range(1, L):
            probs *= self.transition[self.sequences[:, l - 1], self.sequences[:, l]]
        self.probs = probs
        self.entropy = float(-(probs * np.log(probs)).sum())
        # patterns: bit l set = position l masked
        patterns = np.arange(2**L)
        self.masked = ((patterns[:, None] >> np.arange(L)[None, :]) & 1).astype(bool)  # (P, L)
        # posterior log p(x0_l = v | visible tokens of x) for every (pattern, sequence, l, v)
        P, S = len(patterns), len(self.sequences)
        self.log_post = np.zeros((P, S, L, K))
        for p in range(P):
            visible = ~self.masked[p]
            keys = [tuple(x[visible]) for x in self.sequences]
            groups: dict[tuple, list[int]] = {}
            for s, key in enumerate(keys):
                groups.setdefault(key, []).append(s)
            for members in groups.values():
                members = np.array(members)
                weight = self.probs[members]
                for l in range(L):
                    marginal = np.array([weight[self.sequences[members, l] == v].sum() for v in range(K)]) / weight.sum()
                    with np.errstate(divide="ignore"):
                        self.log_post[p, members, l, :] = np.log(marginal)[None, :]
        nll = -np.take_along_axis(self.log_post, self.sequences[None, :, :, None], axis=3)[..., 0]  # (P, S, L)
        self.loss = np.where(self.masked[:, None, :], nll, 0.0).sum(axis=2)  # X(pattern, sequence)
        self.loss_range = float(self.loss.max())
        # z-code table for a denoiser that sees only z: code = Σ_l z_l·(K+1)^l (mask = K)
        self.denoiser_table = np.zeros(((K + 1) ** L, L, K))
        powers = (K + 1) ** np.arange(L)
        for p in range(P):
            z = np.where(self.masked[p][None, :], K, self.sequences)
            codes = (z * powers).sum(axis=1)
            self.denoiser_table[codes] = self.log_post[p]
        self.powers = powers

    def pattern_weights(self, alpha: float) -> np.ndarray:
        count = self.masked.sum(axis=1)
        return (1.0 - alpha) ** count * alpha ** (self.length - count)

    def moments(self, alpha: float) -> tuple[float, float]:
        """(E X, Var X) under x0 ~ chain, z ~ q(z | x0) at visibility α."""
        joint = self.pattern_weights(alpha)[:, None] * self.probs[None, :]
        mean = float((joint * self.loss).sum())
        return mean, float((joint * self.loss**2).sum() - mean**2)

    def loss_polynomial(self, alpha: np.ndarray) -> np.ndarray:
        """f(α) = E X, vectorised."""
        count = self.masked.sum(axis=1)
        per_pattern = (self.probs[None, :] * self.loss).sum(axis=1)  # (P,)
        a = np.asarray(alpha, dtype=np.float64)[..., None]
        return np.asarray(((1.0 - a) ** count * a ** (self.length - count) * per_pattern).sum(axis=-1))

    def sample(self, size: int, generator: torch.Generator, device: torch.device) -> Int[Tensor, "n L"]:
        u = torch.rand(size, self.length, dtype=torch.float64, generator=generator, device=generator.device).cpu().numpy()
        x = np.zeros((size, self.length), dtype=np.int64)
        x[:, 0] = np.searchsorted(np.cumsum(self.initial), u[:, 0], side="right")
        cumulative = np.cumsum(self.transition, axis=1)
        for l in range(1, self.length):
            x[:, l] = (u[:, l][:, None] >= cumulative[x[:, l - 1]]).sum(axis=1)
        return torch.as_tensor(np.minimum(x, self.vocab_size - 1), device=device)

    def exact_denoiser(self, z: Int[Tensor, "n L"]) -> Float[Tensor, "n L K"]:
        codes = (z.cpu().numpy() * self.powers).sum(axis=1)
        return torch.as_tensor(self.denoiser_table[codes], device=z.device)

    def context_free_denoiser(self, z: Int[Tensor, "n L"]) -> Float[Tensor, "n L K"]:
        """A wrong denoiser (mutant): the position's marginal, ignoring the visible context."""
        marginal = np.zeros((self.length, self.vocab_size))
        for l in range(self.length):
            for v in range(self.vocab_size):
                marginal[l, v] = self.probs[self.sequences[:, l] == v].sum()
        out = np.broadcast_to(np.log(marginal), (z.shape[0], self.length, self.vocab_size))
        return torch.as_tensor(out.copy(), device=z.device)

