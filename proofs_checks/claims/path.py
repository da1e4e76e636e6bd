"""Claims 3 and 4: shared noise gives a masked (absorbing) path; a fresh-noise Markov path does not."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import FLOAT_BUDGET, as_numpy, checked_names, chunks, qualified_name, random_tokens

# ---------------------------------------------------------------- claim 3: path duality


PATH_TIMES = (0.2, 0.5, 0.8)


def _pair_statistics(
    ctx: Context,
    coupling: Any,
    vocab_size: int,
    n: int,
    times: tuple[float, ...],
    generator: torch.Generator,
) -> dict[str, Any]:
    """Counts over n tokens of one coupling: visible at each time, joint visible/masked pairs, and
    nesting violations (visible at t but masked at s < t)."""
    m = len(times)
    visible = np.zeros(m, dtype=np.int64)
    both = np.zeros((m, m), dtype=np.int64)  # visible at s and at t
    s_not_t = np.zeros((m, m), dtype=np.int64)  # visible at s, masked at t
    violations = 0
    chunk = max(1, FLOAT_BUDGET // (vocab_size if coupling.method == "gaussian" else 8))
    for size in chunks(n, chunk):
        x0 = random_tokens(size, vocab_size, generator, ctx.device)
        noise = coupling.sample_noise(x0, generator=generator)
        vis = [coupling.visible(noise, t, x0=x0) for t in times]
        for i in range(m):
            visible[i] += int(vis[i].sum())
            for j in range(i + 1, m):
                both[i, j] += int((vis[i] & vis[j]).sum())
                s_not_t[i, j] += int((vis[i] & ~vis[j]).sum())
                violations += int((vis[j] & ~vis[i]).sum())
    ctx.count(n)
    return {"visible": visible, "both": both, "s_not_t": s_not_t, "violations": violations}


def check_path_duality(
    ctx: Context,
    *,
    coupling_fn: Callable[..., Any],
    schedule_fn: Callable[[], Any],
    reverse_prob_fn: Callable[..., Any],
) -> ClaimOutcome:
    """Shared noise gives an absorbing masked path: nested masks (zero-violation), marginals α(t),
    forward kernel P(visible t | visible s) = α_t/α_s and reverse posterior P(visible s | masked t)
    = (α_s − α_t)/(1 − α_t) (the latter from `reverse_prob_fn`).  Kernels are exact binomial tests
    conditional on the number of tokens visible at s (masked at t), which is exact because tokens
    are independent.  Couplings: "gaussian" K = 10 (the definition) and "threshold" K = 50 258."""
    schedule = schedule_fn()
    setups = [("gaussian", 10, ctx.size(3_000_000, 100_000)), ("threshold", 50258, ctx.size(8_000_000, 400_000))]
    delta = stats.bonferroni(ctx.delta, 3 * len(setups))
    alpha = as_numpy(schedule.alpha(np.asarray(PATH_TIMES)))
    tests, checked = [], {}
    pairs = [(i, j) for i in range(len(PATH_TIMES)) for j in range(i + 1, len(PATH_TIMES))]
    for method, vocab_size, n in setups:
        coupling = coupling_fn(schedule, vocab_size, vocab_size, method)
        checked[f"coupling ({method})"] = qualified_name(type(coupling))
        counts = _pair_statistics(ctx, coupling, vocab_size, n, PATH_TIMES, ctx.generator("path", method))
        tag = f"{method}, K={vocab_size}"
        tests.append(stats.zero_violation_test(f"nested masks (visible at t => visible at s<t), {tag}", counts["violations"], n * len(pairs), ctx.beta))
        tests.append(stats.binomial_family_test(
            f"marginals P(visible at t) = alpha(t), {tag}", counts["visible"], np.full(len(PATH_TIMES), n), alpha, delta, ctx.beta,
            labels=[f"t={t}" for t in PATH_TIMES]))
        kernel_k, kernel_n, kernel_p, reverse_k, reverse_n, reverse_p, labels = [], [], [], [], [], [], []
        for i, j in pairs:
            s, t = PATH_TIMES[i], PATH_TIMES[j]
            labels.append(f"s={s}, t={t}")
            kernel_k.append(counts["both"][i, j])
            kernel_n.append(counts["visible"][i])
            kernel_p.append(alpha[j] / alpha[i])
            # masked at t = n − visible_t; of those, visible at s = visible_s − both
            reverse_k.append(counts["s_not_t"][i, j])
            reverse_n.append(n - counts["visible"][j])
            reverse_p.append(float(reverse_prob_fn(schedule, s, t)))
        tests.append(stats.binomial_family_test(
            f"forward kernel P(vis t | vis s) = alpha_t/alpha_s, {tag}", np.array(kernel_k), np.array(kernel_n), np.array(kernel_p),
            delta, ctx.beta, labels=labels))
        tests.append(stats.binomial_family_test(
            f"reverse posterior P(vis s | masked t) = (alpha_s-alpha_t)/(1-alpha_t), {tag}", np.array(reverse_k), np.array(reverse_n),
            np.array(reverse_p), delta, ctx.beta, labels=labels))
        ctx.tick(f"claim 3 {method}")
    checked["reverse_prob_fn"] = qualified_name(reverse_prob_fn)
    return ClaimOutcome(tests=tests, checked=checked, notes=[f"times {PATH_TIMES}, schedule {schedule!r}"])


# -------------------------------------------------------------- claim 4: counterexample


COUNTEREXAMPLE_TIMES = tuple(float(t) for t in np.round(np.linspace(0.05, 0.85, 9), 4))


def ou_path(
    x0: Int[Tensor, "n"],
    vocab_size: int,
    alpha_tilde: np.ndarray,
    sigma_tilde: np.ndarray,
    generator: torch.Generator,
) -> Iterator[Float[Tensor, "n K"]]:
    """A Markov (variance-preserving Ornstein–Uhlenbeck) Gaussian path with fresh noise per step:
    x_{i+1} = a·x_i + sqrt(1 − a²)·ξ, a = α̃_{i+1}/α̃_i, so x_i = α̃_i·e_x0 + σ̃_i·ε_i with
    ε_{i+1} = ρ·ε_i + sqrt(1 − ρ²)·ξ, ρ = a·σ̃_i/σ̃_{i+1}: every marginal is the calibrated one.
    Yields x_i for each time."""
    onehot = torch.nn.functional.one_hot(x0, vocab_size).to(torch.float64)
    eps = torch.randn(x0.shape + (vocab_size,), dtype=torch.float64, generator=generator, device=x0.device)
    for i in range(len(alpha_tilde)):
        if i > 0:
            a = alpha_tilde[i] / alpha_tilde[i - 1]
            rho = a * sigma_tilde[i - 1] / sigma_tilde[i]
            fresh = torch.randn(eps.shape, dtype=torch.float64, generator=generator, device=eps.device)
            eps = rho * eps + math.sqrt(max(0.0, 1.0 - rho * rho)) * fresh
        yield alpha_tilde[i] * onehot + sigma_tilde[i] * eps


COUNTEREXAMPLE_VOCAB = 10


def check_counterexample(
    ctx: Context,
    *,
    path_fn: Callable[..., Iterator[Tensor]],
    project_fn: Callable[..., Any],
    calibrate_fn: Callable[..., Any],
    schedule_fn: Callable[[], Any],
) -> ClaimOutcome:
    """A Markov OU path with fresh noise, projected, has the right marginals (exact binomial per
    time) but is not a masked path: tokens reappear (masked at t_i, visible at t_{i+1}).  The claim
    "reappearance rate > 0" passes iff some token reappears (one-sided Clopper–Pearson lower bound
    > 0): a masked path never does, so its false-pass rate is exactly 0.  K = 10, log-linear."""
    vocab_size = COUNTEREXAMPLE_VOCAB
    schedule = schedule_fn()
    calibrated = calibrate_fn(schedule, vocab_size)
    times = np.asarray(COUNTEREXAMPLE_TIMES)
    nu = as_numpy(calibrated.nu(times))  # α̃ = ν/√(1+ν²), σ̃ = 1/√(1+ν²) (checked against the schedule in claim 6)
    alpha_tilde, sigma_tilde = nu / np.sqrt(1.0 + nu**2), 1.0 / np.sqrt(1.0 + nu**2)
    alpha = as_numpy(schedule.alpha(times))
    n = ctx.size(1_200_000, 50_000)
    generator = ctx.generator("ou")
    m = len(times)
    visible = np.zeros(m, dtype=np.int64)
    reappear = np.zeros(m - 1, dtype=np.int64)
    masked_before = np.zeros(m - 1, dtype=np.int64)
    ever = 0
    for size in chunks(n, max(1, FLOAT_BUDGET // vocab_size)):
        x0 = random_tokens(size, vocab_size, generator, ctx.device)
        previous = None
        any_reappear = torch.zeros(size, dtype=torch.bool, device=ctx.device)
        for i, w in enumerate(path_fn(x0, vocab_size, alpha_tilde, sigma_tilde, generator)):
            vis = project_fn(w, x0, vocab_size) == x0
            visible[i] += int(vis.sum())
            if previous is not None:
                event = ~previous & vis
                reappear[i - 1] += int(event.sum())
                masked_before[i - 1] += int((~previous).sum())
                any_reappear |= event
            previous = vis
        ever += int(any_reappear.sum())
    ctx.count(n)
    tests = [
        stats.binomial_family_test("marginals of the projected OU path = alpha(t)", visible, np.full(m, n), alpha,
                                   ctx.delta / 2, ctx.beta, labels=[f"t={t}" for t in times]),
        stats.positive_rate_test("tokens reappear (masked at t_i, visible at t_i+1): rate > 0", ever, n, ctx.delta / 2, ctx.beta,
                                 {"per_step_events": reappear, "per_step_masked": masked_before}),
    ]
    rate = reappear / n
    bounds = [stats.clopper_pearson(int(k), n, 0.05) for k in reappear]
    return ClaimOutcome(
        tests=tests,
        checked=checked_names(path_fn=path_fn, project_fn=project_fn, calibrate_fn=calibrate_fn),
        plot_data={"reappearance": {"t_from": times[:-1], "t_to": times[1:], "rate": rate,
                                    "lower": [b[0] for b in bounds], "upper": [b[1] for b in bounds],
                                    "rate_given_masked": reappear / np.maximum(masked_before, 1), "n": n}},
        notes=[f"K={vocab_size}, {n} paths at times {COUNTEREXAMPLE_TIMES}; reappearance per step (fraction of all tokens): "
               + ", ".join(f"{r:.4f}" for r in rate) + f"; tokens that ever reappear: {ever / n:.4f}"],
    )

