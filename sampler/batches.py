"""Teacher training batches and the MDLM continuous-time ELBO.

A batch: clean x0 ~ data, times t_b (low-discrepancy), z_t = q(z_t | x0) masked through
`duality` (each token visible independently with probability α(t)).

Loss (MDLM, continuous time, nats per token):

    L = E_t [ w(t) · (1/L) Σ_{l : z_t,l = m} −log p_θ(x0_l | z_t) ],   w(t) = −α′(t) / (1 − α(t)),

an upper bound on −log p(x0)/L.  Low-discrepancy times t_b = t_min + (1 − t_min)·((u + b/B) mod 1),
one shared u ~ U(0, 1), cover [t_min, 1] evenly in every batch and lower the loss variance.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

T_MIN = 1e-3  # w(t) ~ 1/t as t -> 0 (log-linear); keeping t away from 0 bounds the weight


def low_discrepancy_times(
    batch_size: int, generator: torch.Generator | None = None, t_min: float = T_MIN, device: Any = "cpu"
) -> Float[Tensor, "B"]:
    """t_b = t_min + (1 − t_min)·((u + b/B) mod 1), u ~ U(0, 1) shared: stratified over [t_min, 1)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min!r}")
    u = torch.rand((), generator=generator, dtype=torch.float64)
    grid = (u + torch.arange(batch_size, dtype=torch.float64) / batch_size) % 1.0
    return (t_min + (1.0 - t_min) * grid).to(device)


def teacher_batch(
    x0: Int[Tensor, "B L"],
    schedule: Any,
    mask_id: int,
    generator: torch.Generator | None = None,
    t: Float[Tensor, "B"] | None = None,
) -> tuple[Int[Tensor, "B L"], Float[Tensor, "B"]]:
    """(z_t, t): x0 masked by duality.q_sample at per-sequence times t (low-discrepancy when None).

    The generator lives on the CPU (reproducible across devices); z_t lands on x0's device.
    """
    from duality import q_sample

    if t is None:
        t = low_discrepancy_times(x0.shape[0], generator)
    elif tuple(t.shape) != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    z_t = q_sample(x0.cpu(), t.cpu(), schedule, mask_id, generator)
    return z_t.to(x0.device), t.to(x0.device)


def elbo_weight(schedule: Any, t: Tensor) -> Tensor:
    """w(t) = −α′(t)/(1 − α(t)) from the schedule, as float32 on t's device."""
    w = schedule.elbo_weight(t.detach().cpu().double())
    w = torch.as_tensor(w, dtype=torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError(f"elbo weight is not finite at t in [{float(t.min())}, {float(t.max())}]")
    return w.to(device=t.device, dtype=torch.float32)


def masked_nll_per_sequence(
    log_probs: Float[Tensor, "B L K"], x0: Int[Tensor, "B L"], z_t: Int[Tensor, "B L"], mask_id: int
) -> Float[Tensor, "B"]:
    """Σ_{l : z_t,l = m} −log p_θ(x0_l | z_t) for each sequence (visible positions contribute 0)."""
    picked = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    masked = z_t == mask_id
    return torch.where(masked, -picked, torch.zeros_like(picked)).sum(dim=-1)


def elbo_loss(
    log_probs: Float[Tensor, "B L K"],
    x0: Int[Tensor, "B L"],
    z_t: Int[Tensor, "B L"],
    t: Float[Tensor, "B"],
    schedule: Any,
    mask_id: int,
) -> Float[Tensor, ""]:
    """Batch mean of w(t)·Σ_masked −log p(x0|z_t) / L: the MDLM ELBO in nats per token."""
    weight = elbo_weight(schedule, t)
    return (weight * masked_nll_per_sequence(log_probs, x0, z_t, mask_id)).mean() / x0.shape[1]
