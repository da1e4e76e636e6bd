"""The masked forward process, its reverse (ancestral) step and the ELBO weight.

Forward:   q(z_t | x0) = ∏_i [α(t)·δ(z_t^i = x0^i) + (1 − α(t))·δ(z_t^i = m)]   (independent per token)
Posterior: for s <= t,  a masked token of z_t unmasks in z_s with probability
               (α_s − α_t)/(1 − α_t),
           its value drawn from the x0-probabilities p_θ(x0 | z_t); a visible token stays.
ELBO:      weight w(t) = −α′(t)/(1 − α(t)) on the masked-token cross-entropy (continuous time).

`schedule` is any theory MaskSchedule (alpha(t), alpha_deriv(t)); times are numbers in [0, 1] or
tensors whose shape is a prefix of the token tensor's shape (per-sequence t of shape (B,)).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from theory._arrays import check_vocab_size
from theory.protocols import Schedule

from ._checks import (
    check_generator,
    check_mask_id,
    check_ordered_times,
    check_same_device,
    check_time,
    check_tokens,
    expand_time,
)

_SMALLEST_UNIFORM = torch.finfo(torch.float64).tiny


def q_sample(
    x0: Int[Tensor, "*batch"],
    t: Any,
    schedule: Schedule,
    mask_id: int,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> Int[Tensor, "*batch"]:
    """z_t ~ q(z_t | x0): each token independently stays x0 with probability α(t), else becomes mask_id.

    Drawn as u ~ U(0, 1) (float64) per token, visible iff u < α(t).  `t` is a number or a per-sequence
    tensor (B,) broadcast over trailing dims.  `vocab_size`, when given, also checks x0 < vocab_size
    and mask_id not a real token; without it x0 must be >= 0 and never equal mask_id.
    """
    if vocab_size is not None:
        vocab_size = check_vocab_size(vocab_size, integer=True)
    mask_id = check_mask_id(mask_id, vocab_size)
    check_tokens(x0, "x0", vocab_size, mask_id)
    check_generator(generator, x0.device)
    t = check_time(t, "t", x0)
    alpha = _schedule_value(schedule.alpha, t, "alpha", x0.device)
    u = torch.rand(tuple(x0.shape), dtype=torch.float64, device=x0.device, generator=generator)
    visible = u < expand_time(alpha, x0.ndim)
    return torch.where(visible, x0, torch.full_like(x0, mask_id))


def reverse_unmask_prob(schedule: Schedule, s: Any, t: Any) -> float | Float[Tensor, "..."]:
    """P(a token masked at t is visible at s) = (α_s − α_t)/(1 − α_t) for s <= t.

    Where α_t = 1 (nothing can be masked at t) the value is 1 (the masked-token posterior is then
    vacuous; 1 keeps `posterior_step` consistent with α_s = 1).  Floats in -> float out; a tensor s or
    t -> float64 tensor (broadcast).
    """
    s = check_time(s, "s", None)
    t = check_time(t, "t", None)
    check_ordered_times(s, t)
    device = t.device if isinstance(t, Tensor) else (s.device if isinstance(s, Tensor) else None)
    # With m = 1 − α (taken from the schedule directly where it offers it, to keep its precision):
    # (α_s − α_t)/(1 − α_t) = (m_t − m_s)/m_t.
    masked_s = _mask_rate(schedule, s, device)
    masked_t = _mask_rate(schedule, t, device)
    if isinstance(masked_s, float) and isinstance(masked_t, float):
        if masked_t <= 0.0:
            return 1.0
        return min(max((masked_t - masked_s) / masked_t, 0.0), 1.0)
    masked_s = torch.as_tensor(masked_s, dtype=torch.float64, device=device)
    masked_t = torch.as_tensor(masked_t, dtype=torch.float64, device=device)
    masked_s, masked_t = torch.broadcast_tensors(masked_s, masked_t)
    safe = torch.where(masked_t > 0, masked_t, torch.ones_like(masked_t))
    prob = torch.where(masked_t > 0, (masked_t - masked_s) / safe, torch.ones_like(masked_t))
    return prob.clamp(0.0, 1.0)


def posterior_step(
    x0_probs: Float[Tensor, "*p_batch K"],
    z_t: Int[Tensor, "*z_batch"],
    s: Any,
    t: Any,
    schedule: Schedule,
    mask_id: int,
    generator: torch.Generator | None = None,
    temperature: float | int = 1.0,
    log_probs: bool = False,
) -> Int[Tensor, "*z_batch"]:
    """One ancestral step z_t -> z_s (s <= t) of the masked reverse process.

    A masked token unmasks with probability (α_s − α_t)/(1 − α_t); its value is drawn from
    p(x0) ∝ exp(log p_θ(x0 | z_t) / temperature) in float64 (temperature = 0: argmax, ties to the
    lowest id).  Visible tokens stay.  x0_probs.shape[:-1] must equal z_t.shape.  `x0_probs` are probabilities over the K real tokens (need not be
    normalised), or log-probabilities/logits when `log_probs=True` (what a denoiser returns).
    Randomness: one uniform per token for the unmasking decision, then one per token for the category
    (drawn for every token, so the generator's stream does not depend on the data).
    """
    if not isinstance(x0_probs, Tensor) or not x0_probs.is_floating_point() or x0_probs.ndim < 1:
        raise ValueError(f"x0_probs must be a floating-point tensor of shape (*batch, K), got {getattr(x0_probs, 'dtype', type(x0_probs))}")
    vocab_size = check_vocab_size(int(x0_probs.shape[-1]), "x0_probs.shape[-1]", integer=True)
    mask_id = check_mask_id(mask_id, vocab_size)
    if not isinstance(z_t, Tensor) or z_t.is_floating_point() or z_t.dtype == torch.bool:
        raise ValueError(f"z_t must be an integer tensor, got {getattr(z_t, 'dtype', type(z_t))}")
    check_same_device(x0_probs, "x0_probs", z_t, "z_t")
    if tuple(x0_probs.shape[:-1]) != tuple(z_t.shape):
        raise ValueError(f"x0_probs has shape {tuple(x0_probs.shape)} but z_t has shape {tuple(z_t.shape)}; need x0_probs.shape[:-1] == z_t.shape")
    masked = z_t == mask_id
    if z_t.numel():
        bad = ~masked & ((z_t < 0) | (z_t >= vocab_size))
        if bool(bad.any()):
            value = int(z_t[bad].reshape(-1)[0])
            raise ValueError(f"z_t contains {value}, neither a real token in [0, {vocab_size}) nor mask_id={mask_id}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    check_generator(generator, z_t.device)
    s = check_time(s, "s", z_t)
    t = check_time(t, "t", z_t)
    check_ordered_times(s, t)

    unmask_prob = reverse_unmask_prob(schedule, s, t)
    unmask_prob = expand_time(unmask_prob, z_t.ndim) if isinstance(unmask_prob, Tensor) else unmask_prob
    shape = tuple(z_t.shape)
    u_unmask = torch.rand(shape, dtype=torch.float64, device=z_t.device, generator=generator)
    u_category = torch.rand(shape, dtype=torch.float64, device=z_t.device, generator=generator)
    unmask = masked & (u_unmask < unmask_prob)
    z_s = z_t.clone()
    if not bool(unmask.any()):
        return z_s
    rows = x0_probs[unmask].to(torch.float64)
    z_s[unmask] = _sample_categories(rows, u_category[unmask], temperature, log_probs).to(z_t.dtype)
    return z_s


def elbo_weight(schedule: Schedule, t: Any) -> float | Float[Tensor, "..."]:
    """Continuous-time ELBO weight w(t) = −α′(t)/(1 − α(t)) (+inf where α(t) = 1, e.g. t = 0).
    1 − α is read from schedule.one_minus_alpha when the schedule has it (precise near t = 0)."""
    t = check_time(t, "t", None)
    device = t.device if isinstance(t, Tensor) else None
    masked = _mask_rate(schedule, t, device)
    deriv = _schedule_value(schedule.alpha_deriv, t, "alpha_deriv", device)
    if isinstance(masked, float):
        return float("inf") if masked <= 0.0 else -deriv / masked
    safe = torch.where(masked > 0, masked, torch.ones_like(masked))
    return torch.where(masked > 0, -deriv / safe, torch.full_like(masked, float("inf")))


# ------------------------------------------------------------------ internals


def _mask_rate(schedule: Schedule, t: float | Tensor, device: Any) -> float | Tensor:
    """1 − α(t), from schedule.one_minus_alpha when it exists (no cancellation near α = 1)."""
    if callable(getattr(schedule, "one_minus_alpha", None)):
        return _schedule_value(schedule.one_minus_alpha, t, "one_minus_alpha", device)
    alpha = _schedule_value(schedule.alpha, t, "alpha", device)
    return 1.0 - alpha


def _schedule_value(function: Any, t: float | Tensor, name: str, device: Any) -> float | Tensor:
    value = function(t)
    if isinstance(t, Tensor):
        value = torch.as_tensor(value, dtype=torch.float64).to(t.device)
        if bool(torch.isnan(value).any()):
            raise ValueError(f"schedule.{name}(t) returned NaN")
        return value
    value = float(value)
    if value != value:
        raise ValueError(f"schedule.{name}({t}) returned NaN")
    return value


def _sample_categories(
    rows: Float[Tensor, "N K"], uniforms: Float[Tensor, " N"], temperature: float, log_probs: bool
) -> Int[Tensor, " N"]:
    """Inverse-CDF categorical draw per row in float64; a zero-probability category is never chosen."""
    if bool(torch.isnan(rows).any()):
        raise ValueError("x0_probs contains NaN at a position being unmasked")
    if log_probs:
        logits = rows  # log-probabilities, or any logits: only differences matter
    else:
        if bool((rows < 0).any()):
            raise ValueError("x0_probs must be non-negative probabilities (pass log_probs=True for log-probabilities)")
        logits = torch.log(rows)
    best = logits.amax(dim=-1, keepdim=True)
    if bool((best == float("-inf")).any()):
        raise ValueError("x0_probs has a row with zero total probability at a position being unmasked")
    if temperature == 0:
        return logits.argmax(dim=-1)
    weights = torch.exp((logits - best) / temperature)
    cdf = torch.cumsum(weights, dim=-1)
    targets = (uniforms * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
    return index.clamp_(max=rows.shape[-1] - 1)
