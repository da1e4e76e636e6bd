"""Claim 10: the batches the trainer builds (teacher masking, distillation pairs) pass claims 1 and 3.

The checked functions are the sampler's own, imported by `trainer_batch_functions`; when they
cannot be imported the claim fails with the ImportError (there is no stand-in to fall back on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import as_numpy, checked_names, chunks

BATCH_TIMES = (0.02, 0.3, 0.6, 0.9)


def trainer_batch_functions() -> dict[str, Callable[..., Any]]:
    """The trainer's own batch constructions, the defaults of claim 10.  Imported, never
    substituted: an ImportError propagates, and the claim fails with it."""
    from sampler.batches import teacher_batch
    from sampler.batches import distillation_batch

    return {"teacher_batch_fn": teacher_batch, "distillation_batch_fn": distillation_batch}


@dataclass(frozen=True)
class BatchSetup:
    """Sizes and exact probabilities shared by the sub-checks of claim 10: K = 8 (mask_id 8),
    L = 64, sequences at each time of BATCH_TIMES, s = max(t − dt, 0) with dt = 0.2."""

    schedule: Any
    rows_total: int  # sequences per time
    chunk_rows: int  # sequences per time in one call
    delta: float  # false-fail budget of each of the 5 statistical families
    vocab_size: int = 8
    length: int = 64
    mask_id: int = 8
    dt: float = 0.2

    @property
    def times(self) -> np.ndarray:
        return np.asarray(BATCH_TIMES)

    @property
    def s_times(self) -> np.ndarray:
        return np.clip(self.times - self.dt, 0.0, None)

    def repeated_times(self, rows: int, device: torch.device) -> torch.Tensor:
        """BATCH_TIMES, each repeated for `rows` consecutive sequences (float64)."""
        return torch.as_tensor(np.repeat(self.times, rows), dtype=torch.float64, device=device)


def _teacher_tests_at_given_times(
    ctx: Context, setup: BatchSetup, teacher_batch_fn: Callable[..., Any], generator: torch.Generator
) -> list[stats.TestResult]:
    """Teacher batches at given per-sequence times: z ∈ {x0, mask} (zero-violation) and
    P(visible at t) = α(t) (exact binomial per time)."""
    m, length, mask_id = len(BATCH_TIMES), setup.length, setup.mask_id
    visible = np.zeros(m, dtype=np.int64)
    per_time = support_violations = 0
    for rows in chunks(setup.rows_total, setup.chunk_rows):
        x0 = torch.randint(0, setup.vocab_size, (rows * m, length), generator=generator).to(ctx.device)
        z, _ = teacher_batch_fn(x0, setup.schedule, mask_id, generator, setup.repeated_times(rows, ctx.device))
        visible += (z == x0).reshape(m, rows * length).sum(dim=1).cpu().numpy()
        support_violations += int((~((z == x0) | (z == mask_id))).sum())
        per_time += rows * length
    ctx.count(per_time * m)
    alpha = as_numpy(setup.schedule.alpha(setup.times))
    return [
        stats.zero_violation_test("teacher batch: z in {x0, mask}", support_violations, per_time * m, ctx.beta),
        stats.binomial_family_test("teacher batch: P(visible at t) = alpha(t)", visible, np.full(m, per_time), alpha,
                                   setup.delta, ctx.beta, labels=[f"t={x}" for x in BATCH_TIMES]),
    ]


def _teacher_tests_own_times(
    ctx: Context, setup: BatchSetup, teacher_batch_fn: Callable[..., Any], generator: torch.Generator
) -> list[stats.TestResult]:
    """Teacher batches with t = None: the returned times lie in [0, 1] (zero-violation) and
    Σ (1{visible} − α(t_b)) = 0 within Bernstein bounds (exact variance L·Σ_b α(t_b)(1 − α(t_b)))."""
    length = setup.length
    x0 = torch.randint(0, setup.vocab_size, (max(1, setup.chunk_rows * len(BATCH_TIMES)), length), generator=generator).to(ctx.device)
    z, t = teacher_batch_fn(x0, setup.schedule, setup.mask_id, generator, None)
    ctx.count(x0.numel())
    t_np = t.detach().cpu().double().numpy()
    out_of_range = int(((t_np < 0) | (t_np > 1)).sum())
    alpha = as_numpy(setup.schedule.alpha(np.clip(t_np, 0.0, 1.0)))
    excess = float((z == x0).sum(dim=1).cpu().double().numpy().sum() - length * alpha.sum())
    return [
        stats.zero_violation_test("teacher batch (own times): t in [0, 1]", out_of_range, t_np.size, ctx.beta),
        stats.bernstein_test("teacher batch (own times): sum of visible - alpha(t) = 0", excess, 0.0,
                             float(length * (alpha * (1 - alpha)).sum()), 1.0, x0.numel(), setup.delta, ctx.beta,
                             unit="tokens (sum over the batch)"),
    ]


def _distillation_pair_counts(
    ctx: Context, setup: BatchSetup, distillation_batch_fn: Callable[..., Any], coupling: Any
) -> dict[str, Any]:
    """Counts over the pairs (z_t, z_s, s) per time: visible at t, at s, at both, at s only;
    nesting and support violations; the largest |s − max(t − dt, 0)|; tokens per time."""
    m, mask_id = len(BATCH_TIMES), setup.mask_id
    counts: dict[str, Any] = {key: np.zeros(m, dtype=np.int64) for key in ("vis_t", "vis_s", "both", "s_only")}
    counts.update(nested=0, wrong=0, s_error=0.0, per_time=0)
    generator = ctx.generator("distill")
    for rows in chunks(setup.rows_total, setup.chunk_rows):
        x0 = torch.randint(0, setup.vocab_size, (rows * m, setup.length), generator=generator, device=ctx.device)
        z_t, z_s, s = distillation_batch_fn(x0, coupling, setup.repeated_times(rows, ctx.device), setup.dt, generator)
        vis_t, vis_s = (z_t == x0).reshape(m, -1), (z_s == x0).reshape(m, -1)
        counts["vis_t"] += vis_t.sum(1).cpu().numpy()
        counts["vis_s"] += vis_s.sum(1).cpu().numpy()
        counts["both"] += (vis_t & vis_s).sum(1).cpu().numpy()
        counts["s_only"] += (vis_s & ~vis_t).sum(1).cpu().numpy()
        counts["nested"] += int((vis_t & ~vis_s).sum())
        counts["wrong"] += int((~((z_t == x0) | (z_t == mask_id))).sum() + (~((z_s == x0) | (z_s == mask_id))).sum())
        s_expected = torch.as_tensor(np.repeat(setup.s_times, rows))
        counts["s_error"] = max(counts["s_error"], float((s.detach().cpu().double() - s_expected).abs().max()))
        counts["per_time"] += rows * setup.length
    ctx.count(counts["per_time"] * m)
    return counts


def _distillation_pair_tests(
    ctx: Context, setup: BatchSetup, distillation_batch_fn: Callable[..., Any], coupling: Any
) -> list[stats.TestResult]:
    """Distillation pairs (z_t, z_s, s = max(t − dt, 0)): nested and z ∈ {x0, mask}
    (zero-violation), s exact, marginals α(t) and α(s), kernel P(vis t | vis s) = α_t/α_s and
    reverse posterior P(vis s | masked t) = (α_s − α_t)/(1 − α_t) (conditional exact binomial)."""
    c = _distillation_pair_counts(ctx, setup, distillation_batch_fn, coupling)
    m, per, delta = len(BATCH_TIMES), c["per_time"], setup.delta
    alpha, alpha_s = as_numpy(setup.schedule.alpha(setup.times)), as_numpy(setup.schedule.alpha(setup.s_times))
    labels = [f"t={x}" for x in BATCH_TIMES]
    return [
        stats.zero_violation_test("distillation pair: nested (visible at t => visible at s)", c["nested"], per * m, ctx.beta),
        stats.zero_violation_test("distillation pair: z in {x0, mask}", c["wrong"], 2 * per * m, ctx.beta),
        stats.tolerance_test("distillation pair: s = max(t - dt, 0)", c["s_error"], 1e-12),
        stats.binomial_family_test(
            "distillation pair: marginals alpha(t), alpha(s)", np.concatenate([c["vis_t"], c["vis_s"]]), np.full(2 * m, per),
            np.concatenate([alpha, alpha_s]), delta, ctx.beta, labels=labels + [f"s={x}" for x in setup.s_times]),
        stats.binomial_family_test("distillation pair: P(vis t | vis s) = alpha_t/alpha_s", c["both"], c["vis_s"], alpha / alpha_s,
                                   delta, ctx.beta, labels=labels),
        stats.binomial_family_test("distillation pair: P(vis s | masked t) = (alpha_s-alpha_t)/(1-alpha_t)", c["s_only"],
                                   per - c["vis_t"], (alpha_s - alpha) / (1 - alpha), delta, ctx.beta, labels=labels),
    ]


def check_trainer_batches(
    ctx: Context,
    *,
    teacher_batch_fn: Callable[..., Any],
    distillation_batch_fn: Callable[..., Any],
    coupling_fn: Callable[..., Any],
    schedule_fn: Callable[[], Any],
) -> ClaimOutcome:
    """The masking the sampler trains on passes claims 1 and 3.  Teacher batches (times given per
    sequence): P(visible) = α(t) (exact binomial per time), z ∈ {x0, mask}; with t = None the
    returned t's lie in [0, 1] and Σ (1{visible} − α(t_b)) is within Bernstein bounds (exact
    variance Σ α(1 − α)).  Distillation pairs (z_t, z_s, s = t − dt): nested, visible tokens are
    x0, marginals at t and s, kernel α_t/α_s and reverse posterior (α_s − α_t)/(1 − α_t)
    (conditional exact binomial).  K = 8, L = 64, log-linear schedule."""
    m, length = len(BATCH_TIMES), BatchSetup.length
    setup = BatchSetup(
        schedule=schedule_fn(),
        rows_total=max(1, ctx.size(14_000_000, 1_000_000) // (length * m)),
        chunk_rows=max(1, 4_000_000 // (length * m)),
        delta=stats.bonferroni(ctx.delta, 5),  # teacher marginals, Bernstein, distillation marginals, kernel, reverse
    )
    # the teacher's generator stays on the CPU, as sampler.batches expects
    cpu_generator = ctx.generator("teacher") if ctx.device.type == "cpu" else torch.Generator().manual_seed(ctx.seed + 101)
    tests = _teacher_tests_at_given_times(ctx, setup, teacher_batch_fn, cpu_generator)
    tests += _teacher_tests_own_times(ctx, setup, teacher_batch_fn, cpu_generator)
    coupling = coupling_fn(setup.schedule, setup.vocab_size, setup.mask_id, "threshold")
    tests += _distillation_pair_tests(ctx, setup, distillation_batch_fn, coupling)
    ctx.tick("claim 10")
    return ClaimOutcome(tests=tests, checked=checked_names(
        teacher_batch_fn=teacher_batch_fn, distillation_batch_fn=distillation_batch_fn, coupling_fn=coupling_fn))
