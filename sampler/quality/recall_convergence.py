"""Recall as a function of k, with convergence diagnostics, and the rule for comparing two samplers.

Every recall estimate here is −log Ẑ/L per held-out sequence with Ẑ an unbiased estimate of q_N(x), so its
mean is an upper bound on −log q_N(x)/L that tightens as k grows.  Two estimators:

- "plain": importance sampling over k reveal patterns from the sampler's own law
  (`recall.draw_reveal_steps`, `recall.pattern_log_likelihoods`): Ẑ = (1/k) Σ_j w_j.  One pool of
  k_max patterns is drawn; recall at k averages the bound over the ⌊k_max/k⌋ disjoint groups of k.
  Diagnostic: the ESS of the normalised weights of a group, as a fraction of k.
- "smc": the particle filter over reveal steps of `recall_smc` with k particles, one fresh run per k.
  Diagnostic: the mean over steps 1..N−1 of the normalised ESS of the weights it resamples by.
- "sequential": a causal shadow student's noise-shared sampler (`sampler.shadow.recall`): the pool holds, per
  draw j, a reveal noise u_j from the sampler's law and the weight w_j = Π_l |I_l| of the category noise walked
  step by step in reveal order, with E[w_j] = q_N(x); otherwise as "plain" (disjoint groups of one pool, ESS of
  a group's normalised weights).

`recall_versus_k` reports, per k in 1, 4, 16, ... (and further, while the change is larger than
`tolerance`), the recall ± SE over held-out sequences, the change from k/4 with its paired SE (per-sequence
differences), the ESS and the wall time.  `remaining_change` = |last change| + 2 SE; `converged` allows a
comparison of two samplers only when each one's remaining change is smaller than the difference claimed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sampler.quality.recall import (
    bound_from_log_weights,
    draw_reveal_steps,
    mean_and_se,
    pattern_log_likelihoods,
    resolve_mask_id,
    reveal_probabilities,
)
from sampler.quality.recall_smc import normalised_ess, smc_log_likelihood
from sampler.sampling import Denoiser, check_positive_int, check_temperature, time_grid
from sampler.protocols import Schedule, reads_shadow_noise
from sampler.shadow.recall import shadow_pool_log_weights, shadow_recall_unavailable

ESTIMATORS = ("plain", "smc", "sequential")
POOLED = ("plain", "sequential")  # estimators that grow one pool of unbiased weights
DEFAULT_KS = (1, 4, 16, 64, 256)


def plain_log_weights(
    denoiser: Denoiser, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int, num_patterns: int,
    temperature: float = 1.0, mask_id: int | None = None, generator: torch.Generator | None = None,
    device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "k B"]:
    """log w_j = log Π_l q_T(x_l | z_{t(l)}(x, π_j)) for `num_patterns` reveal patterns from the sampler's law,
    the (pattern, sequence) pairs batched together through `pattern_log_likelihoods`."""
    mask_id = resolve_mask_id(denoiser, mask_id)
    num_sequences, seq_len = heldout.shape
    probs = reveal_probabilities(schedule, steps)
    reveal_step = draw_reveal_steps(num_patterns, num_sequences, seq_len, probs, generator)
    log_lik = pattern_log_likelihoods(denoiser, heldout.repeat(num_patterns, 1), reveal_step.reshape(1, -1, seq_len),
                                      time_grid(steps).tolist()[:-1], [temperature], mask_id, device, batch_size)
    return log_lik.reshape(num_patterns, num_sequences)


def grouped_bound(log_weights: Float[Tensor, "K B"], k: int, seq_len: int) -> tuple[Float[Tensor, " B"], float]:
    """(per-sequence bound −log((1/k) Σ_group w)/L averaged over the ⌊K/k⌋ disjoint groups of k weights, mean
    normalised ESS of a group's weights)."""
    groups = log_weights.shape[0] // k
    if groups < 1:
        raise ValueError(f"k={k} exceeds the {log_weights.shape[0]} weights drawn")
    grouped = log_weights[: groups * k].reshape(groups, k, -1)
    bound = bound_from_log_weights(grouped, seq_len).mean(dim=0)
    return bound, float(normalised_ess(grouped.transpose(1, 2)).nanmean())


def level_entry(k: int, per_sequence: Float[Tensor, " B"], previous: Tensor | None, ess: float,
                seconds: float) -> dict[str, Any]:
    """One row of the k table: recall ± SE, change from the previous k ± paired SE, ESS, wall time."""
    recall, recall_se = mean_and_se(per_sequence, "recall")
    change, change_se = (math.nan, math.nan) if previous is None else mean_and_se(per_sequence - previous, "change")
    return {"k": k, "recall": recall, "recall_se": recall_se, "change": change, "change_se": change_se,
            "ess": ess, "seconds": seconds, "per_sequence": per_sequence}


def _level_values(estimator: str, k: int, pool: dict[str, Any], run: Callable[[int, int], Any],
                  seq_len: int) -> tuple[Tensor, float, float]:
    """(per-sequence recall, ESS, seconds) at k: a pooled estimator's pool grows to k draws; SMC runs k particles."""
    start = time.perf_counter()
    if estimator in POOLED:
        if pool["log_weights"].shape[0] < k:
            fresh = run(k - pool["log_weights"].shape[0], k)
            pool["log_weights"] = torch.cat([pool["log_weights"], fresh])
            pool["seconds"] += time.perf_counter() - start
        bound, ess = grouped_bound(pool["log_weights"], k, seq_len)
        return bound, ess, pool["seconds"] * k / pool["log_weights"].shape[0]
    result = run(k, k)
    ess = float(result["ess"][1:].nanmean()) if result["ess"].shape[0] > 1 else 1.0
    return -result["log_likelihood"] / seq_len, ess, time.perf_counter() - start


def recall_versus_k(
    denoiser: Denoiser, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int, estimator: str = "smc",
    temperature: float = 1.0, ks: Sequence[int] = DEFAULT_KS, tolerance: float | None = None, max_k: int = 4096,
    seed: int = 0, mask_id: int | None = None, device: Any = "cpu", batch_size: int = 256,
    **smc_options: Any,
) -> dict[str, Any]:
    """Recall at each k of `ks` (increasing, each 4 × the one before), then further ×4 while
    `remaining_change` > `tolerance` (when given) and k <= max_k.

    Returns {"estimator", "steps", "temperature", "levels": [level_entry ...], and the last level's "k",
    "recall", "recall_se", "change", "change_se", "ess", "remaining", "per_sequence"}.  The pool and
    each SMC run draw from torch.Generator seeded from `seed` (pool: seed; SMC at k: seed + k).
    `smc_options` (twist, proposal, resampling) go to `recall_smc.smc_log_likelihood`.  "sequential" needs a
    causal shadow student (and "plain"/"smc" a denoiser that does not read shadow noise), checked before any work.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    ks = [check_positive_int(k, "ks") for k in ks]
    if not ks or any(b != 4 * a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must be non-empty, each 4 times the one before, got {ks!r}")
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number or None, got {tolerance!r}")
    if estimator in POOLED and smc_options:
        raise ValueError(f"smc options {sorted(smc_options)} given for the {estimator} estimator")
    _check_estimator_fits(estimator, denoiser)
    temperature = check_temperature(temperature)
    mask_id = resolve_mask_id(denoiser, mask_id)
    generator = torch.Generator().manual_seed(seed)
    common = dict(steps=steps, temperature=temperature, mask_id=mask_id, device=device, batch_size=batch_size)

    def run(count: int, k: int) -> Any:
        if estimator == "plain":
            return plain_log_weights(denoiser, schedule, heldout, num_patterns=count, generator=generator, **common)
        if estimator == "sequential":
            return shadow_pool_log_weights(denoiser, schedule, heldout, steps=steps, num_draws=count,
                                           temperature=temperature, generator=generator, device=device,
                                           batch_size=batch_size)
        return smc_log_likelihood(denoiser, schedule, heldout, particles=k,
                                  generator=torch.Generator().manual_seed(seed + k), **common, **smc_options)

    pool = {"log_weights": torch.empty(0, heldout.shape[0], dtype=torch.float64), "seconds": 0.0}
    levels: list[dict[str, Any]] = []
    k = ks[0]
    while True:
        per_sequence, ess, seconds = _level_values(estimator, k, pool, run, heldout.shape[1])
        previous = levels[-1]["per_sequence"] if levels else None
        levels.append(level_entry(k, per_sequence, previous, ess, seconds))
        if k < ks[-1]:
            k *= 4
        elif tolerance is not None and remaining_change(levels[-1]) > tolerance and 4 * k <= max_k:
            k *= 4
        else:
            break
    if estimator in POOLED:  # the pool grew: every level's groups over the final pool
        _regroup_pool(levels, pool, heldout.shape[1])
    last = levels[-1]
    return {"estimator": estimator, "steps": steps, "temperature": temperature, "levels": levels,
            **{key: last[key] for key in ("k", "recall", "recall_se", "change", "change_se", "ess", "per_sequence")},
            "remaining": remaining_change(last)}


def estimator_for(denoiser: Any, per_token_independent: str = "plain") -> str:
    """The estimator of `denoiser`'s own sampler: "sequential" for a shadow student (its noise-shared sampler),
    otherwise `per_token_independent` ("plain" or "smc", over reveal patterns)."""
    return "sequential" if reads_shadow_noise(denoiser) else per_token_independent


def _check_estimator_fits(estimator: str, denoiser: Any) -> None:
    """ValueError unless the estimator estimates `denoiser`'s own sampler: "sequential" for a causal shadow student
    (`sampler.shadow.recall.shadow_recall_unavailable` gives the reason otherwise), "plain"/"smc" for a denoiser
    that does not read shadow noise (a shadow student's law is not its noise-free conditionals')."""
    if estimator == "sequential":
        reason = shadow_recall_unavailable(denoiser)
        if reason is not None:
            raise ValueError(f"estimator 'sequential' needs a causal shadow student: {reason}")
    elif reads_shadow_noise(denoiser):
        raise ValueError(f"estimator {estimator!r} is for per-token-independent samplers; a shadow student reads "
                         "its noise (use estimator='sequential' for a causal one)")


def _regroup_pool(levels: list[dict[str, Any]], pool: dict[str, Any], seq_len: int) -> None:
    """Recompute every pooled level from the final pool (more disjoint groups at the small k), in place."""
    previous = None
    for i, level in enumerate(levels):
        per_sequence, ess = grouped_bound(pool["log_weights"], level["k"], seq_len)
        levels[i] = level_entry(level["k"], per_sequence, previous, ess, level["seconds"])
        previous = per_sequence


def remaining_change(report: dict[str, Any]) -> float:
    """|change from k/4 to k| + 2 SE of that change, at a report's (or level's) last k; inf with one level."""
    change, change_se = report["change"], report["change_se"]
    if math.isnan(change):
        return math.inf
    return abs(change) + 2.0 * change_se


def converged(report_a: dict[str, Any], report_b: dict[str, Any], claimed_difference: float | None = None) -> bool:
    """True when a comparison of the two samplers' recalls is allowed: each report's `remaining_change` is
    smaller than the difference claimed (default: |recall_a − recall_b|)."""
    difference = abs(report_a["recall"] - report_b["recall"]) if claimed_difference is None else abs(claimed_difference)
    return remaining_change(report_a) < difference and remaining_change(report_b) < difference


def format_recall_convergence(report: dict[str, Any]) -> str:
    """One line: recall ± SE (estimator, k; last ×4 change ± SE; ESS)."""
    return (f"recall {report['recall']:.4f} ± {report['recall_se']:.4f} ({report['estimator']}, k={report['k']}; "
            f"change from k/4 {report['change']:+.4f} ± {report['change_se']:.4f}; ESS {report['ess']:.2f})")
