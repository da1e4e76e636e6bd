"""Data-source base classes and their shared validation helpers (see sampler.data for the sources)."""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from theory.checks import check_int

DEFAULT_SEQ_LEN = 64

_check_int = check_int  # the name the sources import


def check_tokens(x: Any, vocab_size: int, name: str = "x") -> Tensor:
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
    decodes_to_text: bool = True  # False: decode() shows token ids as characters, with no text behind them

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
