"""Every training loss of the sampler, in one place.

Teacher (MDLM continuous-time ELBO, nats per token):

    L = E_t [ w(t) · (1/L) Σ_{l : z_t,l = m} −log p_θ(x0_l | z_t) ],   w(t) = −α′(t) / (1 − α(t)),

an upper bound on −log p(x0)/L; w(t) is the schedule's own `elbo_weight`.

Distillation: `temper` (p^{1/T} renormalised), `divergence` (reverse KL, forward KL, JS),
`distillation_loss` (cross-entropy on hard targets + divergence to soft ones), `mcd_loss`
(MCD: CE where z_s revealed x0, D to the tempered teacher at (z_s, s) where z_s masks it) and
`baseline_targets` (the stochastic baseline's targets from the teacher's own two-half-step
rollout t → t − dt/2 → t − dt; see sampler.train.baseline).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from duality.forward import posterior_step

from .batches import check_dt
from .names import DIVERGENCES  # noqa: F401  (re-exported)
from .protocols import Denoiser, Schedule



def elbo_weight(schedule: Schedule, t: Float[Tensor, "B"]) -> Float[Tensor, "B"]:
    """The schedule's own ELBO weight w(t) = −α′(t)/(1 − α(t)) (schedule.elbo_weight), computed in float64 on the CPU, checked finite, as float32 on t's device."""
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
    schedule: Schedule,
    mask_id: int,
) -> Float[Tensor, ""]:
    """Batch mean of w(t)·Σ_masked −log p(x0|z_t) / L: the MDLM ELBO in nats per token."""
    weight = elbo_weight(schedule, t)
    return (weight * masked_nll_per_sequence(log_probs, x0, z_t, mask_id)).mean() / x0.shape[1]


def temper(log_probs: Float[Tensor, "*b K"], temperature: float) -> Float[Tensor, "*b K"]:
    """log softmax(log p / T): p^{1/T} renormalised (T < 1 sharpens).  T = 1 returns log p unchanged."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if temperature == 1.0:
        return log_probs
    return torch.log_softmax(log_probs / temperature, dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Σ_k p_k (log p_k − log q_k), with 0·log 0 = 0 (no NaN from −inf entries of p)."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def divergence(
    student_log_probs: Float[Tensor, "N K"], target_log_probs: Float[Tensor, "N K"], kind: str = "reverse_kl"
) -> Float[Tensor, "N"]:
    """Per-row divergence between the student p and the target q (computed in float32 or wider).

    reverse_kl: KL(p ‖ q) = Σ p (log p − log q)   (mode seeking; the default)
    forward_kl: KL(q ‖ p) = Σ q (log q − log p)   (= cross-entropy to q minus H(q))
    js:         ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {kind!r}")
    log_p = student_log_probs.float() if student_log_probs.dtype in (torch.float16, torch.bfloat16) else student_log_probs
    log_q = target_log_probs.to(log_p.dtype)
    if kind == "reverse_kl":
        return _kl(log_p, log_q)
    if kind == "forward_kl":
        return _kl(log_q, log_p)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * _kl(log_p, log_m) + 0.5 * _kl(log_q, log_m)


def distillation_loss(
    student_log_probs: Float[Tensor, "B L K"],
    soft_targets: Float[Tensor, "B L K"],
    soft_mask: Bool[Tensor, "B L"],
    hard_targets: Int[Tensor, "B L"],
    hard_mask: Bool[Tensor, "B L"],
    kind: str = "reverse_kl",
) -> tuple[Float[Tensor, ""], dict[str, float]]:
    """(Σ_{hard} −log p(x0) + Σ_{soft} D(p ‖ q)) / #(hard ∪ soft).

    Only the selected positions are read, so the −inf entries that SUBS puts at visible
    positions never reach the arithmetic.  The two masks must be disjoint.
    """
    if bool((soft_mask & hard_mask).any()):
        raise ValueError("soft_mask and hard_mask overlap; a position takes one kind of target")
    count = int((soft_mask | hard_mask).sum())
    log_p = student_log_probs.float()
    ce = -log_p[hard_mask].gather(-1, hard_targets[hard_mask].unsqueeze(-1)).squeeze(-1)
    div = divergence(log_p[soft_mask], soft_targets[soft_mask].detach(), kind)
    ce_sum, div_sum = ce.sum(), div.sum()
    loss = (ce_sum + div_sum) / max(count, 1)
    stats = {
        "loss": float(loss.detach()),
        "ce_tokens": int(hard_mask.sum()),
        "div_tokens": int(soft_mask.sum()),
        "ce_mean": float(ce_sum.detach()) / max(int(hard_mask.sum()), 1),
        "div_mean": float(div_sum.detach()) / max(int(soft_mask.sum()), 1),
    }
    return loss, stats


def mcd_loss(
    student_log_probs: Float[Tensor, "B L K"],
    teacher_log_probs: Float[Tensor, "B L K"],
    x0: Int[Tensor, "B L"],
    z_t: Int[Tensor, "B L"],
    z_s: Int[Tensor, "B L"],
    mask_id: int,
    kind: str = "reverse_kl",
    temperature: float = 1.0,
    cross_entropy: bool = True,
) -> tuple[Float[Tensor, ""], dict[str, float]]:
    """MCD loss on positions masked in z_t: CE on x0 where z_s revealed it, D to the tempered teacher at (z_s, s) where z_s masks it.

    `cross_entropy=False` (the "no CE" control) drops the first term: the loss is
    Σ_{still masked} D(p ‖ q) / #(still masked), the divergence to the teacher on still-masked tokens only.
    """
    masked_t = z_t == mask_id
    revealed = masked_t & (z_s != mask_id)
    still_masked = masked_t & (z_s == mask_id)
    if not cross_entropy:
        revealed = torch.zeros_like(revealed)
    return distillation_loss(student_log_probs, temper(teacher_log_probs, temperature), still_masked, x0, revealed, kind)


def reveal_step(
    x0_probs: Float[Tensor, "B L K"],
    z_t: Int[Tensor, "B L"],
    t: Float[Tensor, "B"],
    s: Float[Tensor, "B"],
    schedule: Schedule,
    mask_id: int,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "B L"]:
    """One ancestral step t → s: a masked token is revealed with probability (α_s − α_t)/(1 − α_t)
    (per sequence) and takes a category drawn in float64 from x0_probs; visible tokens stay."""
    return posterior_step(x0_probs.double(), z_t, s, t, schedule, mask_id, generator)


@torch.no_grad()
def baseline_targets(
    teacher: Denoiser,
    z_t: Int[Tensor, "B L"],
    t: Float[Tensor, "B"],
    dt: float | int,
    schedule: Schedule,
    mask_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "B L K"], int]:
    """(target log-probs, teacher forward passes = 2) from the teacher's two-half-step rollout.

    The rollout's draw uses `generator` on the CPU (float64), so it is reproducible and
    independent of the device the teacher runs on.
    """
    dt = check_dt(dt)
    mid = (t.double() - dt / 2).clamp(min=0.0)
    first = temper(teacher(z_t, t.float()).float(), temperature)
    z_mid = reveal_step(first.detach().exp().cpu(), z_t.cpu(), t.double().cpu(), mid.cpu(), schedule, mask_id, generator)
    z_mid = z_mid.to(z_t.device)
    second = temper(teacher(z_mid, mid.to(z_t.device).float()).float(), temperature)
    revealed_first = (z_t == mask_id) & (z_mid != mask_id)
    return torch.where(revealed_first.unsqueeze(-1), first, second), 2
