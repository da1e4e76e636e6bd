"""Two-axis sample quality of a sampler on a source with exact likelihood: one entry point.

- precision: E_q[−log p(x)]/L of the samples under the true source (`sample_quality`); it rewards lost
  diversity (E_q[−log p] = H(q) + KL(q ‖ p)), so it is never read alone;
- recall: the importance-weighted bound on −log q_N(x)/L of held-out true sequences under the N-step
  sampler (`sampler.quality.recall`; for a causal shadow student under its noise-shared sampler, the
  sequential importance bound of `sampler.shadow.recall`; other shadow students: unavailable, with
  the reason); collapse and incoherence both raise it;
- n-gram fidelity: JS and KL both ways between the samples' n-gram frequencies and the source's exact
  n-gram marginals, beside the value of as many fresh true sequences (`sampler.quality.fidelity`);
- typicality: KS statistic between per-sequence −log p/L of the samples and of fresh true sequences.

A sampler beats another only where it is no worse on both precision and recall (or lies strictly
inside the other's temperature frontier in the (precision, recall) plane), with n-gram fidelity and
typicality no worse.  Metrics that need exact likelihood are None on other sources, with the reason
in `result["unavailable"]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sampler.configs import check_recall_k  # noqa: F401  (torch-free for the command line; re-exported)
from sampler.data import DataSource, HiddenMarkovSource, NGramSource, no_exact_likelihood, sample_quality
from sampler.data.base import check_tokens
from sampler.quality.fidelity import check_ngram_orders, ngram_fidelity, typicality
from sampler.quality.recall import mean_and_se, recall_per_sequence, resolve_mask_id, reveal_probabilities
from sampler.quality.recall_convergence import estimator_for, recall_versus_k
from sampler.shadow.recall import shadow_recall_per_sequence, shadow_recall_unavailable
from sampler.sampling import Denoiser, check_positive_int, check_temperature
from sampler.protocols import Schedule, reads_shadow_noise

# Offsets of the seed for each independent random stream (paired across samplers evaluated with one seed).
_HELDOUT, _PATTERNS, _REFERENCE, _BOOTSTRAP = range(4)


def _check_recall_inputs(
    source: DataSource, denoiser: Any, schedule: Schedule | None, steps: Any, temperature: Any, k: Any, heldout: Any,
    mask_id: Any, seq_len: int, num_samples: int, final_greedy: bool,
) -> Tensor | int | None:
    """Validate the recall arguments (before any sampling); returns heldout as a tensor or a count."""
    if denoiser is None:
        if heldout is not None:
            raise ValueError("heldout is only used for recall, which needs denoiser (got denoiser=None)")
        return None
    if not getattr(source, "exact", False):
        raise ValueError(f"denoiser given, but recall needs a source with exact likelihood; source "
                         f"{getattr(source, 'name', source)!r} has none")
    if schedule is None:
        raise ValueError("schedule must be given with denoiser (the sampler's masking schedule)")
    reveal_probabilities(schedule, steps)  # checks steps and that the schedule ends at alpha(0) = 1
    check_positive_int(k, "k")
    check_temperature(temperature)
    resolve_mask_id(denoiser, mask_id)
    if final_greedy:
        raise ValueError("final_greedy=True has no recall: the greedy last step makes the sampler's law degenerate")
    if heldout is None:
        return num_samples
    if isinstance(heldout, int) and not isinstance(heldout, bool):
        return check_positive_int(heldout, "heldout")
    held = check_tokens(heldout, source.vocab_size, "heldout")
    if held.shape[1] != seq_len or held.shape[0] < 2:
        raise ValueError(f"heldout must have shape (M >= 2, {seq_len}), got {tuple(held.shape)}")
    return held


def two_axis_metrics(
    samples: Int[Tensor, "N L"], source: DataSource, *, denoiser: Denoiser | None = None, schedule: Schedule | None = None,
    steps: int | None = None, temperature: float = 1.0, heldout: Int[Tensor, "M _"] | int | None = None, k: int = 4,
    ngram_orders: Sequence[int] = (1, 2, 3), seed: int = 0, mask_id: int | None = None, final_greedy: bool = False,
    num_bootstrap: int = 200, device: Any = "cpu", batch_size: int = 256,
) -> dict[str, Any]:
    """Precision, recall, n-gram fidelity and typicality of `samples`, each with a standard error.

    `samples` came from the sampler (denoiser, schedule, steps, temperature).  Recall is computed when
    `denoiser` is given, on `heldout` (a tensor of true sequences, a count of fresh ones to draw, or None:
    as many as samples) with `k` reveal patterns.  Fresh reference sequences (as many as samples) give the
    fidelity reference and the typicality comparison.  All random streams derive from `seed`, so two
    samplers evaluated with one seed share held-out data, patterns and references (paired differences:
    `sampler.data.paired_difference` on the `per_sequence` tensors).

    Returns {"precision", "recall", "fidelity", "typicality", "unavailable", ...}: precision and recall are
    dicts with `value`, `se`, `per_sequence`; fidelity maps each order to `ngram_fidelity`'s row;
    a metric that cannot be computed is None with its reason in `unavailable`.
    """
    x = check_tokens(samples, source.vocab_size, "samples")
    num_samples, seq_len = x.shape
    if num_samples < 2:
        raise ValueError(f"samples must hold at least 2 sequences, got {num_samples}")
    orders = check_ngram_orders(ngram_orders, seq_len, source.vocab_size)
    check_positive_int(num_bootstrap, "num_bootstrap")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    held = _check_recall_inputs(source, denoiser, schedule, steps, temperature, k, heldout, mask_id, seq_len,
                                num_samples, final_greedy)

    def stream(offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 4 + offset)

    result: dict[str, Any] = {"source": source.name, "num_samples": num_samples, "seq_len": seq_len,
                              "precision": None, "recall": None, "fidelity": None, "typicality": None,
                              "unavailable": {}}
    reason = no_exact_likelihood(source)
    if reason is not None:
        for name in ("precision", "fidelity", "typicality"):
            result["unavailable"][name] = reason
    else:
        _exact_metrics(result, x, source, orders, num_bootstrap, stream(_REFERENCE), stream(_BOOTSTRAP))
    shadow_reason = shadow_recall_unavailable(denoiser) if reads_shadow_noise(denoiser) else None
    if held is None:
        result["unavailable"]["recall"] = "no denoiser given"
    elif shadow_reason is not None:
        result["unavailable"]["recall"] = shadow_reason
    else:
        if isinstance(held, int):
            held = source.sample_batch(held, seq_len, stream(_HELDOUT))
        result["recall"] = recall_metric(denoiser, schedule, held, source, steps, temperature, k, mask_id,
                                         stream(_PATTERNS), device, batch_size)
    return result


def _exact_metrics(
    result: dict[str, Any], x: Tensor, source: DataSource, orders: tuple[int, ...], num_bootstrap: int,
    reference_stream: torch.Generator, bootstrap_stream: torch.Generator,
) -> None:
    quality = sample_quality(x, source)
    result["precision"] = {
        "value": quality["nll_per_token"], "se": quality["nll_se"], "per_sequence": quality["per_sequence_nll"],
        "entropy_rate": quality["entropy_rate"], "unigram_entropy": quality["unigram_entropy"],
        "unigram_entropy_se": quality["unigram_entropy_se"],
    }
    reference = source.sample_batch(x.shape[0], x.shape[1], reference_stream)
    reference_nll = -source.log_prob(reference) / x.shape[1]
    result["typicality"] = typicality(quality["per_sequence_nll"], reference_nll, num_bootstrap=num_bootstrap,
                                      generator=bootstrap_stream)
    if isinstance(source, (HiddenMarkovSource, NGramSource)):
        result["fidelity"] = ngram_fidelity(x, source, reference, orders=orders, num_bootstrap=num_bootstrap,
                                            generator=bootstrap_stream)
    else:
        result["unavailable"]["fidelity"] = f"exact n-gram marginals are not implemented for {type(source).__name__}"


def recall_bound_per_sequence(
    denoiser: Denoiser, schedule: Schedule, heldout: Tensor, *, mask_id: int | None = None, **options: Any,
) -> Float[Tensor, "T M"]:
    """The recall bound of `denoiser`'s sampler per held-out sequence, one row per temperature (the one recall
    dispatcher): the sequential importance bound of a noise-shared shadow student (sampler.shadow.recall), else
    the reveal-pattern bound of an ancestral sampler (sampler.quality.recall; `mask_id` only there).
    `options`: steps, temperatures, k, generator, device, batch_size."""
    if reads_shadow_noise(denoiser):
        return shadow_recall_per_sequence(denoiser, schedule, heldout, **options)
    return recall_per_sequence(denoiser, schedule, heldout, mask_id=mask_id, **options)


def recall_with_diagnostic(
    denoiser: Denoiser, schedule: Schedule, heldout: Tensor, *, steps: int, temperature: float = 1.0,
    max_k: int = 64, tolerance: float | None = None, seed: int = 0, mask_id: int | None = None, device: Any = "cpu",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Recall with its k and convergence diagnostic (the one recall dispatcher, like `recall_bound_per_sequence`),
    `recall_versus_k` at k = 1, 4, ... up to `max_k` (with `tolerance`: from k = 4 on it stops once
    |change k/4 -> k| + 2 SE <= tolerance), on one growing pool of unbiased weights:

    - an ancestral (per-token-independent) sampler: plain importance sampling over reveal patterns
      (estimator "plain");
    - a causal shadow student: the sequential importance bound of its noise-shared sampler (estimator
      "sequential", `sampler.shadow.recall`).

    Returns the `recall_versus_k` report: recall, recall_se, k, change, change_se, remaining, ess, estimator,
    per_sequence, levels.  Every random draw derives from `seed` (pairs across samplers and temperatures)."""
    max_k = check_recall_k(max_k, "max_k")
    estimator = estimator_for(denoiser)
    first = min(max_k, 4) if tolerance is not None else max_k
    ks = [4 ** i for i in range(round(math.log(first, 4)) + 1)]
    return recall_versus_k(denoiser, schedule, heldout, steps=steps, estimator=estimator, temperature=temperature, ks=ks,
                           tolerance=tolerance, max_k=max_k, seed=seed, mask_id=mask_id, device=device,
                           batch_size=batch_size)


def recall_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a `recall_with_diagnostic` report (no tensors): value, se, k, change, change_se,
    remaining, ess, estimator, and the recall at every k evaluated."""
    return {"value": report["recall"], "se": report["recall_se"], "k": report["k"], "change": report["change"],
            "change_se": report["change_se"], "remaining": report["remaining"], "ess": report["ess"],
            "estimator": report["estimator"],
            "by_k": [[level["k"], level["recall"], level["recall_se"]] for level in report["levels"]]}


def recall_metric(
    denoiser: Denoiser, schedule: Schedule, heldout: Tensor, source: DataSource, steps: int, temperature: float,
    k: int, mask_id: int | None, generator: torch.Generator, device: Any, batch_size: int,
) -> dict[str, Any]:
    """Recall with its SE, and the held-out sequences' true −log p/L (`heldout_nll`) with the paired gap: the
    reveal-pattern bound of a per-token-independent sampler, or the sequential importance bound of a causal
    shadow student (its noise-shared sampler; `sampler.shadow.recall`)."""
    per_sequence = recall_bound_per_sequence(denoiser, schedule, heldout, steps=steps, temperatures=(temperature,), k=k,
                                             mask_id=mask_id, generator=generator, device=device, batch_size=batch_size)[0]
    value, se = mean_and_se(per_sequence, "recall")
    true_nll = -source.log_prob(heldout) / heldout.shape[1]
    nll, nll_se = mean_and_se(true_nll, "heldout_nll")
    gap, gap_se = mean_and_se(per_sequence - true_nll, "recall gap")
    return {"value": value, "se": se, "per_sequence": per_sequence, "steps": steps, "temperature": float(temperature),
            "k": k, "bound": "sequential importance (causal shadow)" if reads_shadow_noise(denoiser)
            else "reveal patterns", "num_heldout": int(heldout.shape[0]), "heldout_nll": nll, "heldout_nll_se": nll_se,
            "gap": gap, "gap_se": gap_se}


def format_two_axis(result: dict[str, Any]) -> str:
    """Plain-text lines of `two_axis_metrics`'s result, each fidelity value beside its true-sequence reference."""
    lines = [f"source {result['source']}, {result['num_samples']} samples of length {result['seq_len']}"]
    for name in ("precision", "recall"):
        metric = result[name]
        if metric is None:
            lines.append(f"{name}: unavailable ({result['unavailable'][name]})")
            continue
        extra = (f" (k={metric['k']}, {metric['steps']} steps, T={metric['temperature']}; held-out true NLL "
                 f"{metric['heldout_nll']:.4f}, gap {metric['gap']:.4f} ± {metric['gap_se']:.4f})") if name == "recall" else ""
        lines.append(f"{name}: {metric['value']:.4f} ± {metric['se']:.4f}{extra}")
    if result["fidelity"] is None:
        lines.append(f"n-gram fidelity: unavailable ({result['unavailable']['fidelity']})")
    for order, row in (result["fidelity"] or {}).items():
        parts = [f"{label} {row[key]:.4f} ± {row[key + '_se']:.4f} (true {row['reference_' + key]:.4f})"
                 for label, key in (("JS", "js"), ("KL(f||P)", "kl_samples_exact"), ("KL(P||f~)", "kl_exact_samples"))]
        lines.append(f"{order}-gram: " + "; ".join(parts))
    typ = result["typicality"]
    lines.append(f"typicality: KS {typ['ks']:.4f} ± {typ['ks_se']:.4f} (p = {typ['p_value']:.3g})" if typ else
                 f"typicality: unavailable ({result['unavailable']['typicality']})")
    return "\n".join(lines)
