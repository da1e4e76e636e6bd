"""Claims 6 and 8: the map ν ↦ α_K(ν): calibration of ν(t) to a schedule, and its derivative."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import as_numpy, checked_names, empirical_below, nu_grid

# --------------------------------------------------------------- claim 6: calibration


CALIBRATION_TIMES = tuple(float(t) for t in np.round(np.concatenate([[0.002, 0.01], np.linspace(0.05, 0.95, 19), [0.99, 0.998]]), 4))


def default_schedules() -> dict[str, Any]:
    from theory import CosineSchedule, LogLinearSchedule, PolynomialSchedule

    return {"log-linear": LogLinearSchedule(), "cosine": CosineSchedule(), "polynomial(2)": PolynomialSchedule()}


def check_calibration(
    ctx: Context,
    *,
    calibrate_fn: Callable[..., Any],
    alpha_fn: Callable[..., Any],
    threshold_fn: Callable[..., Any],
    schedules_fn: Callable[[], dict[str, Any]],
) -> ClaimOutcome:
    """The calibrated ν(t) reproduces α(t) for log-linear, cosine and polynomial schedules at
    K ∈ {3, 50 258}: numerically |α_K(ν(t)) − α(t)| <= 1e-9 and α̃² + σ̃² = 1, α̃/σ̃ = ν; by Monte
    Carlo P(Y < ν(t)) = α(t) for threshold draws Y (DKW over the 23 times, Bonferroni over the 6
    (schedule, K) pairs)."""
    schedules = schedules_fn()
    vocab_sizes = (3, 50258)
    n = ctx.size(2_000_000, 400_000)
    times = np.asarray(CALIBRATION_TIMES)
    delta = stats.bonferroni(ctx.delta, len(schedules) * len(vocab_sizes))
    tests = []
    for vocab_size in vocab_sizes:
        y = threshold_fn((n,), vocab_size, ctx.generator("calibration", vocab_size), ctx.device)
        ctx.count(n)
        sorted_y = torch.sort(y.reshape(-1)).values
        for label, schedule in schedules.items():
            calibrated = calibrate_fn(schedule, vocab_size)
            nu = as_numpy(calibrated.nu(times))
            target = as_numpy(schedule.alpha(times))
            error = float(np.max(np.abs(as_numpy(alpha_fn(nu, vocab_size)) - target)))
            tests.append(stats.tolerance_test(f"alpha_K(nu(t)) = alpha(t), {label}, K={vocab_size}", error, 1e-9))
            at, st = as_numpy(calibrated.alpha_tilde(times)), as_numpy(calibrated.sigma_tilde(times))
            vp = float(np.max(np.abs(at**2 + st**2 - 1.0)))
            ratio = float(np.max(np.abs(at / st - nu) / np.maximum(1.0, np.abs(nu))))
            tests.append(stats.tolerance_test(f"variance preserving and nu = alpha~/sigma~, {label}, K={vocab_size}", max(vp, ratio), 1e-9))
            empirical = empirical_below(sorted_y, nu)
            tests.append(stats.dkw_test(f"P(Y < nu(t)) = alpha(t) (Monte Carlo), {label}, K={vocab_size}", empirical, target, n, delta,
                                        ctx.beta, {"t": times, "p_hat": empirical, "p_claimed": target}))
        ctx.tick(f"claim 6 K={vocab_size}")
    return ClaimOutcome(tests=tests, checked=checked_names(calibrate_fn=calibrate_fn, alpha_fn=alpha_fn, threshold_fn=threshold_fn))


# ----------------------------------------------------------------- claim 8: derivative


DERIVATIVE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
SCORE_CLIP = 8.0


def check_derivative(
    ctx: Context,
    *,
    alpha_fn: Callable[..., Any],
    deriv_fn: Callable[..., Any],
    max_sampler: Callable[..., Any],
) -> ClaimOutcome:
    """dα/dν against central finite differences of α (h = 1e-4, relative tolerance 1e-6) and
    against the score-function estimate E[ε_k·1{M < ν + ε_k}] (M the max of K − 1 normals,
    ε_k ~ N(0, 1): d/dν P(M < ν + ε_k) with ν the mean of ε_k's shifted copy).  ε_k is clipped at
    ±8 (bias <= 2(φ(8) − 8·(1 − Φ(8))) < 1e-15); empirical Bernstein bound on the clipped mean,
    Bonferroni over K ∈ {2, 10, 1000, 50 258} × 5 ν."""
    from scipy.stats import norm

    vocab_sizes = (2, 10, 1000, 50258)
    n = ctx.size(2_000_000, 300_000)
    delta = stats.bonferroni(ctx.delta, len(vocab_sizes) * len(DERIVATIVE_LEVELS))
    bias = 2.0 * (norm.pdf(SCORE_CLIP) - SCORE_CLIP * norm.sf(SCORE_CLIP))
    tests = []
    for vocab_size in vocab_sizes:
        grid = nu_grid(vocab_size, DERIVATIVE_LEVELS)
        claimed = as_numpy(deriv_fn(grid, vocab_size))
        h = 1e-4
        fd = (as_numpy(alpha_fn(grid + h, vocab_size)) - as_numpy(alpha_fn(grid - h, vocab_size))) / (2 * h)
        error = float(np.max(np.abs(fd - claimed)) / max(np.max(np.abs(claimed)), 1e-300))
        tests.append(stats.tolerance_test(f"d alpha/d nu = central finite difference, K={vocab_size}", error, 1e-6, unit="relative"))
        generator = ctx.generator("derivative", vocab_size)
        v = torch.rand(n, dtype=torch.float64, generator=generator, device=ctx.device).clamp_(min=1e-300)
        top = max_sampler(v, vocab_size - 1)
        clean = torch.randn(n, dtype=torch.float64, generator=generator, device=ctx.device)
        clipped = clean.clamp(-SCORE_CLIP, SCORE_CLIP)
        ctx.count(n)
        for nu, d in zip(grid, claimed):
            values = clipped * (top < float(nu) + clean).to(torch.float64)
            mean = float(values.mean())
            variance = float(values.var())
            tests.append(stats.empirical_bernstein_test(
                f"score-function estimate of d alpha/d nu, K={vocab_size}, nu={nu}", mean, float(d), variance, 2 * SCORE_CLIP, n,
                delta, ctx.beta, bias_bound=bias, unit="absolute (d alpha / d nu)"))
        ctx.tick(f"claim 8 K={vocab_size}")
    return ClaimOutcome(tests=tests, checked=checked_names(deriv_fn=deriv_fn, alpha_fn=alpha_fn, max_sampler=max_sampler))

