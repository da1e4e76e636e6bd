"""q_N(x) of the per-token-independent N-step ancestral sampler, exactly, by enumerating reveal patterns.

Ground truth for the recall estimators on tiny configurations.  A reveal pattern r ∈ {0..N−1}^L gives each
token its reveal step; under the sampler's law the tokens' steps are independent with
P(r_l = i) = p_i Π_{j<i} (1 − p_j) (p_i from `recall.reveal_probabilities`), and

    q_N(x) = Σ_r Π_l P(r_l) · Π_l q_T(x_l | z_{S_l}, t_{r_l}),    S_l = {m : r_m < r_l},

z_S showing x on S and the mask elsewhere, q_T ∝ p_θ^{1/T} (float64 log-softmax of the denoiser's output / T).
The denoiser is called once per (revealed set S, step i): 2^L · N rows per sequence; the N^L patterns are then
summed in log space (logsumexp).  Refused beyond `max_patterns` patterns.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sampler.data.base import check_tokens
from sampler.sampling import resolve_mask_id, reveal_probabilities
from sampler.sampling import Denoiser, check_positive_int, check_temperature, time_grid
from sampler.protocols import Schedule


def reveal_step_log_law(reveal_probs: Float[Tensor, " N"]) -> Float[Tensor, " N"]:
    """log P(a token reveals at step i) = log p_i + Σ_{j<i} log(1 − p_j), float64."""
    probs = reveal_probs.double()
    log_survive = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-probs).cumsum(0)[:-1]])
    return probs.log() + log_survive


def subset_log_probs(
    denoiser: Denoiser, x: Int[Tensor, " L"], times: list[float], temperature: float, mask_id: int, device: Any = "cpu",
) -> Float[Tensor, "N S L"]:
    """log q_T(x_l | z_S, t_i) for every step i, every revealed set S (bitmask, bit m = token m shown) and
    token l."""
    seq_len = x.shape[0]
    bits = (torch.arange(2 ** seq_len)[:, None] >> torch.arange(seq_len)[None, :]) & 1
    z = torch.where(bits.bool(), x[None, :], mask_id)
    out = []
    for t in times:
        t_vec = torch.full((z.shape[0],), t, device=device)
        log_probs = denoiser(z.to(device), t_vec).detach().to("cpu", torch.float64)
        log_q = torch.log_softmax(log_probs / temperature, dim=-1)
        out.append(log_q.gather(-1, x[None, :, None].expand(len(z), -1, 1))[..., 0])
    return torch.stack(out)


def exact_sampler_log_likelihood(
    denoiser: Denoiser, schedule: Schedule, sequences: Int[Tensor, "B L"], *, steps: int, temperature: float = 1.0,
    mask_id: int | None = None, device: Any = "cpu", max_patterns: int = 2 ** 20,
) -> Float[Tensor, " B"]:
    """log q_N(x) for each sequence by summing over all N^L reveal patterns (module docstring)."""
    steps = check_positive_int(steps, "steps")
    temperature = check_temperature(temperature)
    mask_id = resolve_mask_id(denoiser, mask_id)
    x = check_tokens(sequences, mask_id, "sequences")
    seq_len = x.shape[1]
    if steps ** seq_len > max_patterns:
        raise ValueError(f"steps ** seq_len = {steps} ** {seq_len} patterns exceed max_patterns={max_patterns}")
    step_log_law = reveal_step_log_law(reveal_probabilities(schedule, steps))
    times = time_grid(steps).tolist()[:-1]
    codes = torch.arange(steps ** seq_len)
    patterns = (codes[:, None] // steps ** torch.arange(seq_len)[None, :]) % steps  # (M, L): base-N digits
    prior = step_log_law[patterns].sum(dim=1)
    earlier = patterns[:, None, :] < patterns[:, :, None]  # (M, l, m): token m revealed before token l
    subsets = (earlier.long() << torch.arange(seq_len)[None, None, :]).sum(dim=-1)  # (M, L)
    token = torch.arange(seq_len)[None, :].expand_as(patterns)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for b in range(x.shape[0]):
        table = subset_log_probs(denoiser, x[b], times, temperature, mask_id, device)
        log_lik = table[patterns, subsets, token].sum(dim=1)
        out[b] = torch.logsumexp(prior + log_lik, dim=0)
    return out
