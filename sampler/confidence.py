"""Confidence-ordered sampling for masked diffusion (MaskGIT / LLaDA-style low-confidence remasking), and its law.

A denoiser is any callable (z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K] (`sampler.protocols`).

Steps run on the grid t_i = 1 − i/N (`sampler.sampling.time_grid`) from the all-masked sequence.  Step i
reveals exactly n_i tokens, the schedule's expected count: with p_j the ancestral reveal probabilities
(`sampler.sampling.reveal_probabilities`), the expected revealed fraction after step i is
F_i = 1 − Π_{j<=i}(1 − p_j) = (α(t_{i+1}) − α(1))/(1 − α(1)), and the cumulative count C_i = ⌊L·F_i + ½⌋
(L·F_i first rounded to 9 decimals, so float noise cannot move a half), C_N = L, n_i = C_i − C_{i−1}.

Which n_i tokens: every masked position l gets a draw y_l from q_T(· | z) ∝ p_θ(· | z_{t_i})^{1/T} (float64,
inverse CDF, one uniform per position per step whatever the data) and a confidence:

- ``"max_prob"``: max_v q_T(v | z) (MaskGIT-style).  It is a function of z alone, so the reveal set is a function
  of z and the sampler's law is exact in one pass over x (`confidence_log_likelihood`):

      q_N(x) = Π_i Π_{l ∈ S_i(z_i(x))} q_T(x_l | z_i(x)),

  where z_i(x) shows x at the positions chosen before step i and S_i(z) is the step's reveal set.
- ``"sampled_prob"``: q_T(y_l | z), the probability of the token just drawn (LLaDA's low-confidence remasking):
  the reveal set depends on draws that are then discarded, so q_N(x) sums over them; no recall is given
  (`confidence_recall_unavailable`).

The n_i masked positions of highest confidence are revealed with their draws; ties go to the lower position.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .protocols import Denoiser, Schedule
from .sampling import check_positive_int, check_temperature, resolve_mask_id, reveal_probabilities, time_grid

CONFIDENCES = ("max_prob", "sampled_prob")
_UNAVAILABLE = {
    "sampled_prob": "the reveal set of 'sampled_prob' confidence depends on the tokens drawn at every masked "
                    "position, which are then discarded, so the sampler's law sums over those draws: no exact "
                    "likelihood or unbiased estimator of it is implemented",
}


def check_confidence(confidence: Any) -> str:
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be one of {CONFIDENCES}, got {confidence!r}")
    return confidence


def confidence_recall_unavailable(confidence: str) -> str | None:
    """None when the recall of the confidence-ordered sampler with this confidence is exact; else the reason."""
    return _UNAVAILABLE.get(check_confidence(confidence))


def reveal_counts(schedule: Schedule, num_steps: int, seq_len: int) -> list[int]:
    """n_0..n_{N−1}: tokens revealed at each step, C_i = ⌊round(L·F_i, 9) + ½⌋ cumulative (module docstring)."""
    seq_len = check_positive_int(seq_len, "seq_len")
    probs = reveal_probabilities(schedule, num_steps).tolist()
    cumulative, still_masked = [], 1.0
    for p in probs:
        still_masked *= 1.0 - p
        cumulative.append(math.floor(round(seq_len * (1.0 - still_masked), 9) + 0.5))
    cumulative[-1] = seq_len  # p_{N−1} = 1: everything is revealed at the last step
    return [cumulative[0]] + [cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))]


def most_confident(scores: Float[Tensor, "B L"], masked: Bool[Tensor, "B L"], count: int) -> Bool[Tensor, "B L"]:
    """The `count` masked positions of highest score in each row (ties to the lower position)."""
    if int(masked.sum(1).min()) < count:
        raise ValueError(f"cannot reveal {count} tokens: a row has only {int(masked.sum(1).min())} masked")
    ranked = torch.where(masked, scores, torch.full_like(scores, -math.inf))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :count]
    chosen = torch.zeros_like(masked)
    return chosen.scatter_(1, order, True)


def tempered_log_probs(denoiser: Denoiser, z: Tensor, t: float, temperature: float, device: Any) -> Tensor:
    """log q_T(· | z) = log_softmax(float64(log p_θ(· | z_t)) / T), on the CPU."""
    t_vec = torch.full((z.shape[0],), float(t), device=device)
    log_probs = denoiser(z.to(device), t_vec).detach().to("cpu", torch.float64)
    return torch.log_softmax(log_probs / temperature, dim=-1)


def draw_tokens(log_q: Float[Tensor, "B L K"], uniforms: Float[Tensor, "B L"]) -> Int[Tensor, "B L"]:
    """Inverse-CDF draw per position in float64 (a category of probability 0 is never drawn)."""
    cumulative = log_q.exp().cumsum(dim=-1)
    target = (uniforms * cumulative[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1).clamp_(max=log_q.shape[-1] - 1)


def _check_common(num_steps: Any, seq_len: Any, temperature: Any, confidence: Any, batch_size: Any) -> None:
    check_positive_int(num_steps, "num_steps")
    check_positive_int(seq_len, "seq_len")
    check_temperature(temperature)
    check_confidence(confidence)
    check_positive_int(batch_size, "batch_size")


@torch.no_grad()
def confidence_sample(
    denoiser: Denoiser, schedule: Schedule, *, num_samples: int, num_steps: int, seq_len: int, mask_id: int,
    vocab_size: int, generator: torch.Generator | None = None, temperature: float = 1.0,
    confidence: str = "max_prob", device: Any = "cpu", batch_size: int = 256,
) -> Int[Tensor, "N L"]:
    """num_samples sequences (CPU int64) by N confidence-ordered steps (module docstring); batches of
    `batch_size` run in order with the one generator (a CPU generator: the same output on any device)."""
    _check_common(num_steps, seq_len, temperature, confidence, batch_size)
    check_positive_int(num_samples, "num_samples")
    check_positive_int(vocab_size, "vocab_size")
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be an int outside the real tokens 0..{vocab_size - 1}, got {mask_id!r}")
    if getattr(denoiser, "reads_shadow_noise", False) is True:
        raise ValueError("denoiser reads the shadow noise (a shadow student): the confidence sampler cannot feed it")
    counts = reveal_counts(schedule, num_steps, seq_len)
    grid = time_grid(num_steps).tolist()
    out = []
    for start in range(0, num_samples, batch_size):
        z = torch.full((min(batch_size, num_samples - start), seq_len), mask_id, dtype=torch.int64)
        for i, count in enumerate(counts):
            if count == 0:
                continue
            log_q = tempered_log_probs(denoiser, z, grid[i], temperature, device)
            if log_q.shape[-1] != vocab_size:
                raise ValueError(f"denoiser returned {log_q.shape[-1]} categories, expected vocab_size={vocab_size}")
            draws = draw_tokens(log_q, torch.rand(z.shape, dtype=torch.float64, generator=generator))
            if confidence == "max_prob":
                scores = log_q.max(dim=-1).values
            else:
                scores = log_q.gather(-1, draws.unsqueeze(-1)).squeeze(-1)
            chosen = most_confident(scores, z == mask_id, count)
            z = torch.where(chosen, draws, z)
        out.append(z)
    return torch.cat(out)


@torch.no_grad()
def confidence_log_likelihood(
    denoiser: Denoiser, schedule: Schedule, x: Int[Tensor, "B L"], *, num_steps: int, temperature: float = 1.0,
    mask_id: int | None = None, confidence: str = "max_prob", device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, " B"]:
    """log q_N(x) of the confidence-ordered sampler, exactly (``confidence="max_prob"`` only):
    Σ_i Σ_{l ∈ S_i(z_i(x))} log q_T(x_l | z_i(x)), walking x's own path (module docstring)."""
    _check_common(num_steps, x.shape[1] if x.dim() == 2 else 1, temperature, confidence, batch_size)
    reason = confidence_recall_unavailable(confidence)
    if reason is not None:
        raise ValueError(f"no exact likelihood for confidence={confidence!r}: {reason}")
    mask_id = resolve_mask_id(denoiser, mask_id)
    if x.dim() != 2 or x.is_floating_point() or bool(((x < 0) | (x >= mask_id)).any()):
        raise ValueError(f"x must be an integer tensor (B, L) of real tokens 0..{mask_id - 1} (below mask_id)")
    x = x.to("cpu", torch.int64)
    counts = reveal_counts(schedule, num_steps, x.shape[1])
    grid = time_grid(num_steps).tolist()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        z = torch.full_like(x[rows], mask_id)
        for i, count in enumerate(counts):
            if count == 0:
                continue
            log_q = tempered_log_probs(denoiser, z, grid[i], temperature, device)
            chosen = most_confident(log_q.max(dim=-1).values, z == mask_id, count)
            picked = log_q.gather(-1, x[rows].unsqueeze(-1)).squeeze(-1)
            total[rows] += torch.where(chosen, picked, torch.zeros_like(picked)).sum(dim=1)
            z = torch.where(chosen, x[rows], z)
    return total


def confidence_recall_per_sequence(
    denoiser: Denoiser, schedule: Schedule, heldout: Int[Tensor, "B L"], *, num_steps: int, temperature: float = 1.0,
    mask_id: int | None = None, confidence: str = "max_prob", device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, " B"]:
    """Exact −log q_N(x)/L per held-out sequence (no estimator, no k): `confidence_log_likelihood` / L.
    +inf where the sampler cannot produce x (a token of probability 0 at its step)."""
    log_lik = confidence_log_likelihood(denoiser, schedule, heldout, num_steps=num_steps, temperature=temperature,
                                        mask_id=mask_id, confidence=confidence, device=device, batch_size=batch_size)
    return -log_lik / heldout.shape[1]
