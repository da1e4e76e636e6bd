"""Claim 9: with an exact denoiser the discrete-time ELBO converges to the continuous one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import as_numpy, checked_names
from .toy import MarkovToy

ELBO_STEPS_EXACT = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ELBO_STEPS_MC = (4, 64, 256)


def discrete_elbo_exact(toy: MarkovToy, alphas: np.ndarray, weights: np.ndarray) -> float:
    """L_T = Σ_i c_i·f(α(t_i)) for step weights c_i = (α_{i−1} − α_i)/(1 − α_i)."""
    return float((weights * toy.loss_polynomial(alphas[1:])).sum())


def stratified_elbo_estimate(
    ctx: Context,
    toy: MarkovToy,
    schedule: Any,
    mask_fn: Callable[..., Any],
    denoiser: Callable[[Tensor], Tensor],
    t_grid: np.ndarray,
    weights: np.ndarray,
    per_step: int,
) -> tuple[float, float]:
    """(estimate, variance): L̂_T = Σ_i c_i·mean_n X_i with `per_step` fresh (x0, z_{t_i}) per step,
    X = Σ_{l masked} −log p(x0_l | z) from `denoiser`, and its exact variance Σ_i c_i²·Var X_i / n."""
    K, steps = toy.vocab_size, len(weights)
    generator = ctx.generator("elbo", steps)
    estimate, variance_sum = 0.0, 0.0
    for i in range(1, steps + 1):
        t = float(t_grid[i])
        x0 = toy.sample(per_step, generator, ctx.device)
        z = mask_fn(x0, t, schedule, K, generator)
        nll = -torch.gather(denoiser(z), -1, x0.unsqueeze(-1)).squeeze(-1)
        loss = torch.where(z == K, nll, torch.zeros_like(nll)).sum(dim=-1)
        estimate += float(weights[i - 1]) * float(loss.mean())
        _, var = toy.moments(float(schedule.alpha(t)))
        variance_sum += float(weights[i - 1]) ** 2 * var / per_step
    ctx.count(per_step * steps)
    return estimate, variance_sum


def check_elbo(
    ctx: Context,
    *,
    mask_fn: Callable[..., Any],
    step_weight_fn: Callable[..., Any],
    elbo_weight_fn: Callable[..., Any],
    denoiser_fn: Callable[[MarkovToy], Callable[[Tensor], Tensor]],
    schedule_fn: Callable[[], Any],
) -> ClaimOutcome:
    """For a Markov-chain toy (K = 3, L = 4) with the exact denoiser, the T-step discrete ELBO
    L_T = Σ_i (α_{s} − α_{t})/(1 − α_{t})·E[Σ_masked −log p(x0_l | z_t)] converges to the continuous
    weighted cross-entropy L_∞ = ∫ w(t)·E[...] dt, w = −α′/(1 − α), as T grows (exactly, by
    enumeration: L_T decreases to L_∞ with T·(L_T − L_∞) bounded), L_∞ by quadrature of
    `elbo_weight_fn` equals the closed form ∫ f(a)/(1 − a) da, and over α ∈ [0, 1] that equals the
    data entropy.  Monte Carlo: the stratified estimate of L_T (each of the T steps, masks from
    `mask_fn`, step weights from `step_weight_fn`, losses from `denoiser_fn`) matches the exact L_T
    (Bernstein with the exact per-step variance), for T ∈ {4, 64, 256}."""
    from scipy.integrate import quad

    toy = MarkovToy()
    schedule = schedule_fn()
    tests: list[stats.TestResult] = []
    alpha_end, alpha_start = float(schedule.alpha(1.0)), float(schedule.alpha(0.0))
    closed_form = quad(lambda a: float(toy.loss_polynomial(np.array(a))) / (1.0 - a), alpha_end, alpha_start, limit=200)[0]
    quadrature = quad(lambda t: float(elbo_weight_fn(schedule, t)) * float(toy.loss_polynomial(np.array(float(schedule.alpha(t))))),
                      0.0, 1.0, limit=200, points=[1e-6, 1e-3])[0]
    tests.append(stats.tolerance_test("continuous ELBO: quadrature of w(t) f(alpha(t)) = closed form", abs(quadrature - closed_form), 1e-7))
    full_range = quad(lambda a: float(toy.loss_polynomial(np.array(a))) / (1.0 - a), 0.0, 1.0, limit=200)[0]
    tests.append(stats.tolerance_test("exact denoiser: continuous ELBO over alpha in [0,1] = data entropy", abs(full_range - toy.entropy), 1e-9))
    exact = {}
    for steps in ELBO_STEPS_EXACT:
        t_grid = np.linspace(0.0, 1.0, steps + 1)
        alphas = as_numpy(schedule.alpha(t_grid))
        weights = np.array([float(step_weight_fn(schedule, float(t_grid[i - 1]), float(t_grid[i]))) for i in range(1, steps + 1)])
        exact[steps] = (discrete_elbo_exact(toy, alphas, weights), t_grid, weights)
    gaps = np.array([exact[T][0] - closed_form for T in ELBO_STEPS_EXACT])
    monotone = bool(np.all(np.diff(gaps) <= 1e-12)) and bool(gaps[-1] >= -1e-9)
    scaled = gaps * np.array(ELBO_STEPS_EXACT)
    tests.append(stats.tolerance_test("L_T decreases to L_inf (monotone in T, gap >= 0)", 0.0 if monotone else 1.0, 0.0,
                                      {"T": ELBO_STEPS_EXACT, "gap": gaps}))
    tests.append(stats.tolerance_test("rate 1/T: max_T T*(L_T - L_inf) <= 2 * value at T=1024", float(np.max(scaled)),
                                      2.0 * float(scaled[-1]) if scaled[-1] > 0 else 0.0, {"T_times_gap": scaled}))
    n_per = ctx.size(2_000_000, 100_000)
    delta = stats.bonferroni(ctx.delta, len(ELBO_STEPS_MC))
    denoiser = denoiser_fn(toy)
    mc_values = {}
    for steps in ELBO_STEPS_MC:
        value, t_grid, weights = exact[steps]
        per_step = max(1, n_per // steps)
        estimate, variance_sum = stratified_elbo_estimate(ctx, toy, schedule, mask_fn, denoiser, t_grid, weights, per_step)
        bound = float(np.max(np.abs(weights))) * toy.loss_range / per_step
        mc_values[steps] = estimate
        tests.append(stats.bernstein_test(f"Monte Carlo L_T = exact L_T, T={steps}", estimate, value, variance_sum, bound, per_step * steps,
                                          delta, ctx.beta, unit="nats", details={"L_inf": closed_form}))
    ctx.tick("claim 9")
    return ClaimOutcome(
        tests=tests,
        checked=checked_names(mask_fn=mask_fn, step_weight_fn=step_weight_fn, elbo_weight_fn=elbo_weight_fn, denoiser=denoiser),
        notes=[f"data entropy {toy.entropy:.6f} nats; L_inf {closed_form:.6f}; exact L_T - L_inf: "
               + ", ".join(f"T={T}: {g:.2e}" for T, g in zip(ELBO_STEPS_EXACT, gaps))
               + "; Monte Carlo " + ", ".join(f"T={T}: {v:.5f} (exact {exact[T][0]:.5f})" for T, v in mc_values.items())],
    )


def exact_denoiser_of(toy: MarkovToy) -> Callable[[Tensor], Tensor]:
    """The exact denoiser p(x0_l | z) of the toy (the default for claim 9)."""
    return toy.exact_denoiser

