"""Claim: the noise-shared (shadow) sampler has the ordinary ancestral sampler's law, and its planted bug.

With a denoiser that ignores the noise, `sampler.shadow.noise.noise_shared_sample` driven by
`sample_shadow_noise` (reveal noise from the coupling, one category noise per token, the value read
at that quantile of the categories sorted by probability) must draw from exactly the law of
`sampler.sampling.ancestral_sample` at the same step count and temperature.  The check compares
the JOINT law of every pair of positions, not only marginals: a bug that correlates the category
noises of a sequence keeps every marginal right and changes the pairs.

Registered as claim 12 (`claims.all_claims()`), its mutant in `mutants.all_mutants()`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from .. import stats
from ..registry import Claim, ClaimOutcome, Context, Mutant
from .common import checked_names
from .toy import MarkovToy

# (steps, temperature, reveal-noise method): one step reveals all four tokens together (the strongest
# test of the joint), two and four steps mix context-dependent reveals, and one case is tempered.
SHADOW_CONFIGS = ((1, 1.0, "uniform"), (2, 1.0, "threshold"), (4, 1.0, "uniform"), (2, 0.7, "uniform"))
_BATCH = 65_536


def markov_toy_denoiser(toy: MarkovToy) -> Callable[[Tensor, Tensor], Tensor]:
    """The toy's exact denoiser as a sampler denoiser (z, t) -> log p(x0 | z); it ignores t and the noise."""

    def denoiser(z: Tensor, t: Tensor) -> Tensor:
        return toy.exact_denoiser(z)

    return denoiser


def pair_frequencies(samples: Int[Tensor, "n L"], num_values: int) -> np.ndarray:
    """Frequencies of the (num_values)² joint cells of every pair of positions i < j, concatenated
    (L(L−1)/2 · num_values² events; the mask id counts as one more value)."""
    n, length = samples.shape
    rows = []
    for i, j in itertools.combinations(range(length), 2):
        code = samples[:, i].long() * num_values + samples[:, j].long()
        rows.append(torch.bincount(code.cpu(), minlength=num_values**2).double().numpy() / n)
    return np.concatenate(rows)


def check_shadow_sampler_law(
    ctx: Context,
    *,
    shadow_sample_fn: Callable[..., Any],
    noise_fn: Callable[..., Any],
    ancestral_fn: Callable[..., Any],
    schedule_fn: Callable[[], Any],
    denoiser_fn: Callable[[MarkovToy], Callable[[Tensor, Tensor], Tensor]],
) -> ClaimOutcome:
    """For the Markov-chain toy (K = 3, L = 4) and its exact (context-dependent) denoiser, which ignores
    the noise: the noise-shared sampler's law equals the ancestral sampler's law at the same step count.
    Per configuration (steps, temperature, reveal method) in SHADOW_CONFIGS, n sequences from each
    sampler (independent streams) and a two-sample Hoeffding test on the frequencies of the 16 joint
    cells (values 0..2 and the mask) of each of the 6 position pairs (96 events, Bonferroni inside the
    test), the claim's false-fail budget split evenly over the configurations (Bonferroni)."""
    toy = MarkovToy()
    vocab_size, length = toy.vocab_size, toy.length
    mask_id = vocab_size
    schedule = schedule_fn()
    denoiser = denoiser_fn(toy)
    n = ctx.size(200_000, 50_000)
    delta = stats.bonferroni(ctx.delta, len(SHADOW_CONFIGS))
    tests: list[stats.TestResult] = []
    notes = []
    for steps, temperature, method in SHADOW_CONFIGS:
        label = f"steps={steps}, T={temperature}, {method}"
        noise = noise_fn(n, length, schedule, vocab_size, mask_id, ctx.generator("shadow noise", label), method, ctx.device)
        shadow = shadow_sample_fn(denoiser, schedule, num_steps=steps, noise=noise, mask_id=mask_id, vocab_size=vocab_size,
                                  temperature=temperature, device=ctx.device, batch_size=_BATCH)
        ancestral = ancestral_fn(denoiser, schedule, num_steps=steps, num_samples=n, seq_len=length, mask_id=mask_id,
                                 vocab_size=vocab_size, generator=ctx.generator("ancestral", label),
                                 temperature=temperature, device=ctx.device, batch_size=_BATCH)
        ctx.count(2 * n * length)
        shadow_pairs = pair_frequencies(shadow, vocab_size + 1)
        ancestral_pairs = pair_frequencies(ancestral, vocab_size + 1)
        tests.append(stats.two_sample_test(f"joint law of the 6 position pairs, {label}: noise-shared vs ancestral",
                                           shadow_pairs, ancestral_pairs, n, n, delta, ctx.beta,
                                           {"largest_cell_difference": float(np.max(np.abs(shadow_pairs - ancestral_pairs)))}))
        notes.append(f"{label}: largest pair-cell difference {np.max(np.abs(shadow_pairs - ancestral_pairs)):.2e}")
        ctx.tick(f"shadow claim {label}")
    notes.insert(0, f"Markov toy K={vocab_size}, L={length}, schedule {schedule!r}, {n} sequences per sampler and configuration")
    return ClaimOutcome(
        tests=tests,
        notes=notes,
        checked=checked_names(shadow_sample_fn=shadow_sample_fn, noise_fn=noise_fn, ancestral_fn=ancestral_fn, denoiser_fn=denoiser_fn),
    )


def default_shadow_implementations() -> dict[str, Any]:
    """The sampler's own functions (imported when the claim runs)."""
    from sampler.sampling import ancestral_sample
    from sampler.shadow.noise import noise_shared_sample, sample_shadow_noise
    from theory import LogLinearSchedule

    return {"shadow_sample_fn": noise_shared_sample, "noise_fn": sample_shadow_noise, "ancestral_fn": ancestral_sample,
            "schedule_fn": LogLinearSchedule, "denoiser_fn": markov_toy_denoiser}


def shadow_claim(claim_id: int) -> Claim:
    """The claim, registered under `claim_id`."""
    return Claim(claim_id, "Noise-shared sampler law",
                 "with a denoiser that ignores the noise, the noise-shared (shadow) sampler's law equals the ancestral "
                 "sampler's law at the same step count (joint law of every pair of positions, Markov toy, 1/2/4 steps, "
                 "T = 1 and 0.7)", "monte carlo", "two-sample Hoeffding (Bonferroni)", check_shadow_sampler_law,
                 default_shadow_implementations)


# ------------------------------------------------------------------------------ planted bug


def noise_shared_category(noise_fn: Callable[..., Any]) -> Callable[..., Any]:
    """One category noise per sequence (the first token's, broadcast over positions: a (B, 1) draw where
    (B, L) was meant) instead of one per token: every marginal stays right, co-revealed tokens become
    comonotone in their rank quantiles."""

    def sample_shadow_noise_shared_category(*args: Any, **kwargs: Any) -> Any:
        noise = noise_fn(*args, **kwargs)
        shared = noise.category[:, :1].expand_as(noise.category).contiguous()
        return type(noise)(noise.reveal, shared, noise.method, noise.vocab_size)

    return sample_shadow_noise_shared_category


def shadow_mutants(claim_id: int) -> list[Mutant]:
    """The planted bug the claim registered under `claim_id` must catch."""
    return [Mutant("shadow_shared_category_noise", claim_id, "one category noise per sequence instead of per token "
                   "(right marginals, wrong joint)", lambda d: {"noise_fn": noise_shared_category(d["noise_fn"])})]
