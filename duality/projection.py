"""The max-value-index-preserving projection and the latent Gaussian process it reads.

Latent:      w_t = α̃(t)·e_{x0} + σ̃(t)·ε,   ε ~ N(0, I_K),   α̃ = ν/√(1+ν²), σ̃ = 1/√(1+ν²)
Projection:  z = x0  if w[x0] > max_{j≠x0} w[j],  else mask_id.

The clean token survives iff ν(t) > Y := max_{j≠x0} ε_j − ε_{x0}, so P(z_t = x0) = α_K(ν(t)) = α(t)
for a calibrated schedule (see /work/shared/notes/duality-math.md).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ._checks import check_mask_id, check_same_device, check_time, check_tokens, expand_time


def project(
    w: Float[Tensor, "*w_batch K"],
    x0: Int[Tensor, "*x_batch"],
    mask_id: int,
) -> Int[Tensor, "*x_batch"]:
    """Max-value-index-preserving projection of a latent onto {x0, mask}.

        z = x0       if w[..., x0] > max_{j ≠ x0} w[..., j]
        z = mask_id  otherwise.

    Ties go to the mask: the clean coordinate must be the strict maximum, so e.g. w = 0 projects
    to mask_id.  w.shape[:-1] must equal x0.shape, x0 must hold real tokens 0..K−1 with
    K = w.shape[-1] >= 2, and mask_id must not be a real token.  Output has x0's dtype and device.
    """
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise ValueError(f"w must be a floating-point tensor of shape (*batch, K), got {getattr(w, 'dtype', type(w))}")
    if w.ndim < 1 or w.shape[-1] < 2:
        raise ValueError(f"w must have a last dimension K >= 2 (the vocabulary), got shape {tuple(w.shape)}")
    vocab_size = int(w.shape[-1])
    mask_id = check_mask_id(mask_id, vocab_size)
    check_tokens(x0, "x0", vocab_size)
    check_same_device(w, "w", x0, "x0")
    if tuple(w.shape[:-1]) != tuple(x0.shape):
        raise ValueError(f"w has shape {tuple(w.shape)} but x0 has shape {tuple(x0.shape)}; need w.shape[:-1] == x0.shape")
    if bool(torch.isnan(w).any()):
        raise ValueError("w contains NaN")
    index = x0.long().unsqueeze(-1)
    clean_value = torch.gather(w, -1, index).squeeze(-1)
    others = w.scatter(-1, index, float("-inf"))
    visible = clean_value > others.amax(dim=-1)
    return torch.where(visible, x0, torch.full_like(x0, mask_id))


def latent_sample(
    x0: Int[Tensor, "*x_batch"],
    calibrated: Any,
    t: Any,
    eps: Float[Tensor, "*e_batch K"],
) -> Float[Tensor, "*e_batch K"]:
    """The latent of the calibrated Gaussian process, materialised in R^K:

        w_t = α̃(t)·onehot(x0) + σ̃(t)·ε,   α̃ = ν/√(1+ν²), σ̃ = 1/√(1+ν²), ν = calibrated.nu(t).

    `calibrated` is a theory.CalibratedSchedule (needs alpha_tilde(t), sigma_tilde(t)); `t` is a number
    in [0, 1] or a tensor whose shape is a prefix of x0.shape (per-sequence t of shape (B,)),
    broadcast over the trailing dims.  eps has shape (*x0.shape, K); w has eps's dtype.
    """
    if not isinstance(eps, Tensor) or not eps.is_floating_point():
        raise ValueError(f"eps must be a floating-point tensor of shape (*batch, K), got {getattr(eps, 'dtype', type(eps))}")
    vocab_size = int(eps.shape[-1]) if eps.ndim else 0
    if vocab_size < 2:
        raise ValueError(f"eps must have a last dimension K >= 2, got shape {tuple(eps.shape)}")
    calibrated_k = getattr(calibrated, "vocab_size", None)
    if calibrated_k is not None and int(calibrated_k) != vocab_size:
        raise ValueError(f"calibrated is calibrated for vocab_size={calibrated_k} but eps has K={vocab_size}")
    check_tokens(x0, "x0", vocab_size)
    check_same_device(eps, "eps", x0, "x0")
    if tuple(eps.shape[:-1]) != tuple(x0.shape):
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has shape {tuple(x0.shape)}; need eps.shape[:-1] == x0.shape")
    t = check_time(t, "t", x0)
    alpha_tilde, sigma_tilde = _latent_coefficients(calibrated, t)
    return _latent(x0, alpha_tilde, sigma_tilde, eps)


def _latent(x0: Tensor, alpha_tilde: Any, sigma_tilde: Any, eps: Tensor) -> Tensor:
    """α̃·onehot(x0) + σ̃·ε for validated inputs (coefficients: floats or tensors of a prefix shape of x0)."""
    alpha_tilde = expand_time(_as_dtype(alpha_tilde, eps), eps.ndim)
    sigma_tilde = expand_time(_as_dtype(sigma_tilde, eps), eps.ndim)
    w = eps * sigma_tilde
    index = x0.long().unsqueeze(-1)
    clean = torch.gather(w, -1, index)
    return w.scatter_(-1, index, clean + alpha_tilde)


def _latent_coefficients(calibrated: Any, t: float | Tensor) -> tuple[Any, Any]:
    """(α̃(t), σ̃(t)) from the calibrated schedule, refusing NaN."""
    alpha_tilde = calibrated.alpha_tilde(t)
    sigma_tilde = calibrated.sigma_tilde(t)
    for name, value in (("alpha_tilde", alpha_tilde), ("sigma_tilde", sigma_tilde)):
        has_nan = bool(torch.isnan(value).any()) if isinstance(value, Tensor) else value != value
        if has_nan:
            raise ValueError(f"calibrated.{name}(t) returned NaN for t={t!r}")
    return alpha_tilde, sigma_tilde


def _as_dtype(value: Any, like: Tensor) -> Any:
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=like.dtype)
    return float(value)
