"""Claims 1, 2 and 7: single-time marginals of the projection of ν·e_x0 + ε.

Claim 1: P(project = x0) = α_K(ν); claim 2: the projection's support is {x0, mask} with ties to
the mask; claim 7: the argmax (uniform-state) relation to α_K(ν).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import FLOAT_BUDGET, as_numpy, checked_names, chunks, empirical_below, gaussian_latents, nu_grid

MARGINAL_VOCAB_SIZES = (2, 3, 10, 1000, 50258)
MATERIALISED_VOCAB_SIZES = (2, 3, 10)
CURVE_LEVELS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97, 0.99)


# ------------------------------------------------------------------ claim 1: marginals


def check_marginal_duality(
    ctx: Context,
    *,
    alpha_fn: Callable[..., Any],
    project_fn: Callable[..., Any],
    threshold_fn: Callable[..., Any],
) -> ClaimOutcome:
    """P(project(ν·e_x0 + ε) = x0) = α_K(ν): materialised Gaussians for K ∈ {2, 3, 10}, O(1)
    threshold draws Y (visible iff Y < ν) for K ∈ {2, 3, 10, 1000, 50258}.  Both estimate the CDF
    of Y on a grid of ν; DKW band over the whole grid per (K, draw kind), Bonferroni over the 8."""
    n_mat = ctx.size(2_000_000, 100_000)
    n_thr = ctx.size(2_000_000, 400_000)
    groups = len(MATERIALISED_VOCAB_SIZES) + len(MARGINAL_VOCAB_SIZES)
    delta = stats.bonferroni(ctx.delta, groups)
    tests, plot = [], {}
    for vocab_size in MARGINAL_VOCAB_SIZES:
        grid = nu_grid(vocab_size, CURVE_LEVELS)
        claimed = as_numpy(alpha_fn(grid, vocab_size))
        entry: dict[str, Any] = {"nu": grid, "claimed": claimed}
        if vocab_size in MATERIALISED_VOCAB_SIZES:
            generator = ctx.generator("materialised", vocab_size)
            hits = torch.zeros(grid.size, dtype=torch.float64)
            for size in chunks(n_mat, max(1, FLOAT_BUDGET // vocab_size)):
                x0, eps, onehot = gaussian_latents(size, vocab_size, generator, ctx.device)
                for i, nu in enumerate(grid):
                    z = project_fn(eps + float(nu) * onehot, x0, vocab_size)
                    hits[i] += float((z == x0).sum())
            ctx.count(n_mat)
            empirical = (hits / n_mat).numpy()
            tests.append(stats.dkw_test(f"materialised Gaussian, K={vocab_size}", empirical, claimed, n_mat, delta, ctx.beta,
                                        {"nu": grid, "p_hat": empirical, "p_claimed": claimed}))
            entry["materialised"] = empirical
            entry["n_materialised"] = n_mat
            ctx.tick(f"claim 1 K={vocab_size} materialised")
        generator = ctx.generator("threshold", vocab_size)
        y = threshold_fn((n_thr,), vocab_size, generator, ctx.device)
        ctx.count(n_thr)
        empirical = empirical_below(torch.sort(y.reshape(-1)).values, grid)
        tests.append(stats.dkw_test(f"threshold draws, K={vocab_size}", empirical, claimed, n_thr, delta, ctx.beta,
                                    {"nu": grid, "p_hat": empirical, "p_claimed": claimed}))
        entry["threshold"] = empirical
        entry["n_threshold"] = n_thr
        entry["epsilon_threshold"] = stats.dkw_epsilon(n_thr, delta)
        entry["epsilon_materialised"] = stats.dkw_epsilon(n_mat, delta)
        curve_nu = np.linspace(grid.min() - 0.5, grid.max() + 0.5, 60)
        entry["curve_nu"], entry["curve_alpha"] = curve_nu, as_numpy(alpha_fn(curve_nu, vocab_size))
        plot[str(vocab_size)] = entry
    return ClaimOutcome(
        tests=tests,
        plot_data={"alpha_curves": plot},
        checked=checked_names(alpha_fn=alpha_fn, project_fn=project_fn, threshold_fn=threshold_fn),
        notes=[f"materialised draws {n_mat} per K, threshold draws {n_thr} per K; ν grid at Y-quantiles {CURVE_LEVELS}"],
    )


# -------------------------------------------------------------------- claim 2: support


def _strict_max_reference(w: Float[Tensor, "*b K"], x0: Int[Tensor, "*b"]) -> Bool[Tensor, "*b"]:
    """w[x0] > w[j] for every j ≠ x0 (independent implementation: count coordinates >= w[x0])."""
    clean = torch.gather(w, -1, x0.unsqueeze(-1))
    return (w >= clean).sum(dim=-1) == 1


def check_support(ctx: Context, *, project_fn: Callable[..., Any]) -> ClaimOutcome:
    """project(w, x0) ∈ {x0, mask_id} always, and = x0 exactly when w[x0] is the strict maximum
    (ties go to the mask).  Random w from four families, including integer-valued w where ties
    are frequent and the all-equal w; batch shape (B, L); mask_id = K and K + 7.  Zero-violation
    tests (false-fail rate 0; detect any violation frequency >= 1 − β^{1/n})."""
    n = ctx.size(1_000_000, 200_000)
    tests = []
    families = [
        ("Gaussian w, K=10", 10, lambda shape, g: torch.randn(shape, dtype=torch.float64, generator=g, device=ctx.device)),
        ("integer w in {0,1,2}, K=3 (ties frequent)", 3,
         lambda shape, g: torch.randint(0, 3, shape, generator=g, device=ctx.device).to(torch.float64)),
        ("integer w in {0,1}, K=2 (ties frequent)", 2,
         lambda shape, g: torch.randint(0, 2, shape, generator=g, device=ctx.device).to(torch.float32)),
        ("constant w (all ties), K=5", 5, lambda shape, g: torch.zeros(shape, dtype=torch.float64, device=ctx.device)),
    ]
    for label, vocab_size, draw in families:
        generator = ctx.generator("support", label)
        support_violations = rule_violations = 0
        length = 50
        for index, size in enumerate(chunks(n, 100_000)):
            rows = max(1, size // length)
            shape = (rows, length)
            x0 = torch.randint(0, vocab_size, shape, generator=generator, device=ctx.device)
            w = draw(shape + (vocab_size,), generator)
            mask_id = vocab_size if index % 2 == 0 else vocab_size + 7
            z = project_fn(w, x0, mask_id)
            support_violations += int((~((z == x0) | (z == mask_id))).sum())
            rule_violations += int(((z == x0) != _strict_max_reference(w, x0)).sum())
        ctx.count(n)
        tests.append(stats.zero_violation_test(f"support {{x0, mask}}: {label}", support_violations, n, ctx.beta))
        tests.append(stats.zero_violation_test(f"x0 iff strict max (ties -> mask): {label}", rule_violations, n, ctx.beta))
    return ClaimOutcome(tests=tests, checked=checked_names(project_fn=project_fn))


# ---------------------------------------------------------- claim 7: uniform-state relation


UNIFORM_LEVELS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


def check_uniform_state(
    ctx: Context,
    *,
    uniform_alpha_fn: Callable[..., Any],
    alpha_fn: Callable[..., Any],
) -> ClaimOutcome:
    """P(argmax(ν·e_x0 + ε) = x0) = ua + (1 − ua)/K with ua = uniform_alpha(ν, K) = (Kα − 1)/(K − 1),
    and every other token has probability (1 − ua)/K (the uniform-state forward process).
    Materialised Gaussians for K ∈ {2, 3, 10}: DKW over the ν grid for the x0 category, exact
    binomial per (ν, other token) with Bonferroni; numerically ua = (Kα − 1)/(K − 1)."""
    vocab_sizes = (2, 3, 10)
    n = ctx.size(1_500_000, 100_000)
    delta = stats.bonferroni(ctx.delta, 2 * len(vocab_sizes))
    tests = []
    for vocab_size in vocab_sizes:
        grid = nu_grid(vocab_size, UNIFORM_LEVELS)
        ua = as_numpy(uniform_alpha_fn(grid, vocab_size))
        alpha = as_numpy(alpha_fn(grid, vocab_size))
        error = float(np.max(np.abs(ua - (vocab_size * alpha - 1.0) / (vocab_size - 1.0))))
        tests.append(stats.tolerance_test(f"uniform_alpha = (K alpha - 1)/(K - 1), K={vocab_size}", error, 1e-12))
        counts = np.zeros((grid.size, vocab_size), dtype=np.int64)  # [ν, (argmax − x0) mod K]
        generator = ctx.generator("uniform", vocab_size)
        for size in chunks(n, FLOAT_BUDGET // vocab_size):
            x0, eps, onehot = gaussian_latents(size, vocab_size, generator, ctx.device)
            for i, nu in enumerate(grid):
                top = torch.argmax(eps + float(nu) * onehot, dim=-1)
                offset = torch.remainder(top - x0, vocab_size)
                counts[i] += torch.bincount(offset, minlength=vocab_size).cpu().numpy()
        ctx.count(n)
        keep = ua + (1.0 - ua) / vocab_size
        tests.append(stats.dkw_test(f"P(argmax = x0) = ua + (1-ua)/K, K={vocab_size}", counts[:, 0] / n, keep, n, delta, ctx.beta,
                                    {"nu": grid, "p_hat": counts[:, 0] / n, "p_claimed": keep}))
        other = counts[:, 1:]
        labels = [f"nu={nu}, offset={j}" for nu in grid for j in range(1, vocab_size)]
        claimed = np.repeat((1.0 - ua) / vocab_size, vocab_size - 1)
        tests.append(stats.binomial_family_test(f"P(argmax = j) = (1-ua)/K for each j != x0, K={vocab_size}", other.reshape(-1),
                                                np.full(other.size, n), claimed, delta, ctx.beta, labels=labels))
        ctx.tick(f"claim 7 K={vocab_size}")
    return ClaimOutcome(tests=tests, checked=checked_names(uniform_alpha_fn=uniform_alpha_fn, alpha_fn=alpha_fn))

