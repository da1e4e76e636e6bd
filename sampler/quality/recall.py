"""Recall of an N-step masked sampler: an upper bound on the NLL of held-out true sequences.

`ancestral_sample` draws, per token, *when* it reveals from the schedule alone (one uniform per
still-masked token per step, reveal iff u < p_i with p_i = (α(t_{i+1}) − α(t_i))/(1 − α(t_i)) on the
grid t_i = 1 − i/N, every token masked at t_0 = 1), and *what* it reveals from the tempered
conditional q(x_l | z_t) ∝ p_θ(x_l | z_t)^{1/T}, independently over the tokens revealed together.
The reveal pattern π (each token's reveal step) does not depend on the tokens, so the sampler's law is

    q_N(x) = E_π[ Π_l q(x_l | z_{t(l)}(x, π)) ],

where z_{t(l)}(x, π) shows x at the tokens revealed before token l's step and masks the rest.
With k patterns π_1..π_k drawn from that same law, Jensen's inequality gives the importance-weighted bound

    −log q_N(x)/L  <=  E[ −log( (1/k) Σ_j Π_l q(x_l | z_{t(l)}(x, π_j)) ) ] / L,

tighter as k grows.  `recall_bound` reports its mean over held-out sequences with a standard error;
the per-sequence values pair across samplers evaluated with the same seed.

Sanity anchors: with an exact denoiser and tokens revealing one at a time, every term is a chain-rule
factor and the bound equals −log p(x)/L for any order; with one step it is −Σ_l log q(x_l | all masked)/L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sampler.data import paired_difference
from sampler.data.base import check_tokens
from sampler.sampling import (Denoiser, check_positive_int, check_temperature, resolve_mask_id,  # noqa: F401 (re-exported)
                              reveal_probabilities, time_grid)
from sampler.protocols import Schedule


def draw_reveal_steps(
    num_patterns: int, num_sequences: int, seq_len: int, reveal_probs: Float[Tensor, " N"],
    generator: torch.Generator | None = None,
) -> Int[Tensor, "k B L"]:
    """Each token's reveal step under the sampler's law: at step i a still-masked token reveals iff u < p_i
    (u uniform, float64, one per token per step, as duality.posterior_step draws it)."""
    shape = (num_patterns, num_sequences, seq_len)
    not_yet = len(reveal_probs)
    reveal_step = torch.full(shape, not_yet, dtype=torch.int64)
    for i, p in enumerate(reveal_probs.tolist()):
        u = torch.rand(shape, dtype=torch.float64, generator=generator)
        reveal_step = torch.where((reveal_step == not_yet) & (u < p), i, reveal_step)
    return reveal_step


def pattern_log_likelihoods(
    denoiser: Denoiser, heldout: Int[Tensor, "B L"], reveal_step: Int[Tensor, "k B L"],
    times: Sequence[float], temperatures: Sequence[float], mask_id: int, device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "T k B"]:
    """log Π_l q_T(x_l | z_{t(l)}(x, π_j)) for each temperature T, pattern j and held-out sequence x.

    Token l revealed at step i is scored by the denoiser at (z, t_i), where z shows x at the tokens with
    reveal step < i: log q_T = log_softmax(float64(log p_θ) / T) at x_l.  One denoiser call per
    (step, pattern) on the sequences that reveal a token at that step (in chunks of `batch_size`);
    the temperatures share it.  `times[i]` is the step's start time t_i.
    """
    x = heldout.cpu()
    num_patterns, num_sequences, _ = reveal_step.shape
    log_lik = torch.zeros(len(temperatures), num_patterns, num_sequences, dtype=torch.float64)
    for j in range(num_patterns):
        for i in reveal_step[j].unique().tolist():  # only the steps at which some token reveals
            if i >= len(times):
                continue
            t = times[i]
            revealing = reveal_step[j] == i
            rows = revealing.any(dim=1).nonzero().squeeze(-1)
            for chunk in rows.split(batch_size):
                z = torch.where(reveal_step[j, chunk] < i, x[chunk], mask_id)
                t_vec = torch.full((len(chunk),), t, device=device)  # as ancestral_sample builds it
                log_probs = denoiser(z.to(device), t_vec).detach().to("cpu", torch.float64)
                for ti, temperature in enumerate(temperatures):
                    log_q = torch.log_softmax(log_probs / temperature, dim=-1).gather(-1, x[chunk, :, None])[..., 0]
                    scored = torch.where(revealing[chunk], log_q, torch.zeros_like(log_q))
                    if torch.isnan(scored).any():
                        raise ValueError(f"denoiser returned a row with zero total probability at step {i} (t={t})")
                    log_lik[ti, j, chunk] += scored.sum(dim=1)
    return log_lik


def recall_per_sequence(
    denoiser: Denoiser, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int,
    temperatures: Sequence[float] = (1.0,), k: int = 4, mask_id: int | None = None,
    generator: torch.Generator | None = None, final_greedy: bool = False, device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "T B"]:
    """−log((1/k) Σ_j Π_l q_T(x_l | z_{t(l)}(x, π_j)))/L per temperature T and held-out sequence x.

    The k patterns are shared by all temperatures (so differences between temperatures are paired).
    `final_greedy=True` is refused: a greedy last step makes the sampler's law a point mass per context.
    """
    if final_greedy:
        raise ValueError("final_greedy=True has no recall: the greedy last step makes the sampler's law "
                         "degenerate (held-out sequences get probability 0); use final_greedy=False")
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(temperatures, (int, float)) or len(temperatures) == 0:
        raise ValueError(f"temperatures must be a non-empty sequence of numbers, got {temperatures!r}")
    temperatures = [check_temperature(temperature) for temperature in temperatures]
    mask_id = resolve_mask_id(denoiser, mask_id)
    x = check_tokens(heldout, mask_id, "heldout")
    probs = reveal_probabilities(schedule, steps)
    reveal_step = draw_reveal_steps(k, x.shape[0], x.shape[1], probs, generator)
    times = time_grid(steps).tolist()[:-1]
    log_lik = pattern_log_likelihoods(denoiser, x, reveal_step, times, temperatures, mask_id, device, batch_size)
    return bound_from_log_weights(log_lik, x.shape[1])


def bound_from_log_weights(log_weights: Float[Tensor, "*T k B"], seq_len: int) -> Float[Tensor, "*T B"]:
    """−log((1/k) Σ_j w_j)/L over the k importance draws (dim −2): the per-sequence recall bound, when each
    w_j is an unbiased estimate of q_N(x) (logsumexp in float64)."""
    k = log_weights.shape[-2]
    return -(torch.logsumexp(log_weights.double(), dim=-2) - math.log(k)) / seq_len


def recall_bound(
    denoiser: Denoiser, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int, temperature: float = 1.0,
    k: int = 4, mask_id: int | None = None, generator: torch.Generator | None = None, final_greedy: bool = False,
    device: Any = "cpu", batch_size: int = 256,
) -> dict[str, Any]:
    """The recall of one sampler: mean over held-out sequences of the importance-weighted bound
    (`recall_per_sequence`), its standard error std/sqrt(B), and the per-sequence values (tensor)."""
    per_sequence = recall_per_sequence(
        denoiser, schedule, heldout, steps=steps, temperatures=(temperature,), k=k, mask_id=mask_id,
        generator=generator, final_greedy=final_greedy, device=device, batch_size=batch_size,
    )[0]
    mean, se = mean_and_se(per_sequence, "recall")
    return {"recall": mean, "recall_se": se, "per_sequence": per_sequence,
            "steps": steps, "temperature": float(temperature), "k": k}


def mean_and_se(values: Float[Tensor, " B"], name: str = "values") -> tuple[float, float]:
    """(mean, std/sqrt(B)) in float64, through paired_difference against zeros (B >= 2, all finite)."""
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} holds non-finite values (a held-out token with probability 0 under the sampler?)")
    return paired_difference(values, torch.zeros_like(values, dtype=torch.float64))
