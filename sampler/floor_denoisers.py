"""Stronger floor families as denoiser wrappers (k-diffusion style): callables (z, t) -> log-probs, so every
sampler and recall function takes them unchanged.

- `ScheduledTemperatureDenoiser`: a per-step temperature, T(t) = T_end + (T_start − T_end)·t (T_start at t = 1,
  the first step; T_end at t = 0), log q(· | z_t) = log_softmax(log p_θ(· | z_t) / T(t)) in float64.  Sample and
  score it at T = 1: the ancestral sampler queries the denoiser at each step's start time t_i and so does the
  reveal-pattern recall bound (`sampler.quality.recall`), so that bound is the recall of the scheduled sampler.
- `TopPDenoiser`: top-p (nucleus) truncation of the wrapped marginals per position: the most probable tokens
  whose cumulative mass, counted before each token, is below p (so the smallest such set with mass >= p; ties
  in probability ordered by token id), renormalised, float64; the cut tokens get log-prob −inf.  Its recall is
  +inf for a held-out sequence whenever a token of it is cut at its reveal step in every drawn reveal pattern
  (and its true −log q_N(x) is +inf when that happens in every pattern): a recall over a set of held-out
  sequences is finite only if no held-out token is ever cut.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .protocols import Denoiser
from .sampling import check_temperature


def _wrappable(denoiser: Any) -> Any:
    if not callable(denoiser):
        raise ValueError(f"denoiser must be a callable (z, t) -> log-probs, got {type(denoiser).__name__}")
    if getattr(denoiser, "reads_shadow_noise", False) is True:
        raise ValueError("denoiser reads the shadow noise (a shadow student): a floor wrapper cannot pass it on")
    return denoiser


class ScheduledTemperatureDenoiser:
    """log_softmax(float64(denoiser(z, t)) / T(t)), T(t) = end + (start − end)·t, linear in the time t."""

    def __init__(self, denoiser: Denoiser, *, start: float, end: float) -> None:
        self.denoiser = _wrappable(denoiser)
        self.start = check_temperature(start)
        self.end = check_temperature(end)
        self.mask_id = getattr(denoiser, "mask_id", None)
        self.vocab_size = getattr(denoiser, "vocab_size", None)
        # the output depends on t: tells ancestral_sample to refuse cached=True
        self.config = SimpleNamespace(time_conditioning=True)

    def temperature(self, t: Float[Tensor, " B"]) -> Float[Tensor, " B"]:
        """T(t) = end + (start − end)·t in float64."""
        return self.end + (self.start - self.end) * t.to(torch.float64)

    def __call__(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"]) -> Float[Tensor, "B L K"]:
        if tuple(t.shape) != (z.shape[0],):
            raise ValueError(f"t must have shape ({z.shape[0]},), got {tuple(t.shape)}")
        log_probs = self.denoiser(z, t).detach().to(torch.float64)
        temperature = self.temperature(t).to(log_probs.device)[:, None, None]
        return torch.log_softmax(log_probs / temperature, dim=-1)

    def describe(self) -> dict[str, Any]:
        return {"family": "temperature_schedule", "start": self.start, "end": self.end}


def top_p_log_probs(log_probs: Float[Tensor, "*batch K"], top_p: float) -> Float[Tensor, "*batch K"]:
    """Nucleus truncation of each row (float64): keep token v iff the mass of the tokens ranked before it (by
    probability, ties by id) is < top_p; renormalise over the kept tokens; −inf elsewhere."""
    log_q = torch.log_softmax(log_probs.to(torch.float64), dim=-1)
    order = torch.sort(log_q, dim=-1, descending=True, stable=True).indices
    sorted_probs = log_q.gather(-1, order).exp()
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = mass_before < top_p
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    kept = torch.where(keep, log_q, torch.full_like(log_q, -math.inf))
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


class TopPDenoiser:
    """Top-p truncation of a denoiser's marginals at every position (`top_p_log_probs`); 0 < top_p <= 1."""

    def __init__(self, denoiser: Denoiser, *, top_p: float) -> None:
        self.denoiser = _wrappable(denoiser)
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < float(top_p) <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
        self.top_p = float(top_p)
        self.mask_id = getattr(denoiser, "mask_id", None)
        self.vocab_size = getattr(denoiser, "vocab_size", None)
        self.config = getattr(denoiser, "config", None)  # time dependence is the wrapped denoiser's

    def __call__(self, z: Int[Tensor, "B L"], t: Float[Tensor, " B"]) -> Float[Tensor, "B L K"]:
        return top_p_log_probs(self.denoiser(z, t).detach(), self.top_p)

    def describe(self) -> dict[str, Any]:
        return {"family": "top_p", "top_p": self.top_p}
