"""Claim 5: the gaussian, threshold and uniform couplings are equal in law."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import FLOAT_BUDGET, as_numpy, chunks, qualified_name, random_tokens


EQUIVALENCE_TIMES = tuple(float(t) for t in np.round(np.linspace(0.05, 0.95, 8), 4))
JOINT_TIMES_INDEX = (0, 2, 5, 7)


def check_coupling_equivalence(
    ctx: Context,
    *,
    coupling_fn: Callable[..., Any],
    schedule_fn: Callable[[], Any],
    methods: tuple[str, ...] = ("gaussian", "threshold", "uniform"),
) -> ClaimOutcome:
    """The gaussian, threshold and uniform couplings are equal in law: for each pair, a
    two-sample Hoeffding test (Bonferroni over points) on the unmasking-time CDF P(τ <= t) on a
    grid of 8 times, and on the 16 joint mask patterns over 4 of them.  The per-token unmasking
    time `unmask_time` must agree with `visible` (visible at t iff t < τ) on a subsample
    (zero-violation, ignoring |τ − t| < 1e-6 rounding of the schedule inversion).  K = 3, cosine."""
    vocab_size = 3
    schedule = schedule_fn()
    n = ctx.size(3_500_000, 250_000)
    n_tau = ctx.size(4_000, 1_000)
    times = EQUIVALENCE_TIMES
    per_method: dict[str, dict[str, Any]] = {}
    tests: list[stats.TestResult] = []
    checked = {}
    for method in methods:
        coupling = coupling_fn(schedule, vocab_size, vocab_size, method)
        checked[f"coupling ({method})"] = qualified_name(type(coupling))
        generator = ctx.generator("equivalence", method)
        visible = np.zeros(len(times), dtype=np.int64)
        patterns = np.zeros(2 ** len(JOINT_TIMES_INDEX), dtype=np.int64)
        tau_sample, consistency_violations = None, 0
        for size in chunks(n, FLOAT_BUDGET // vocab_size):
            x0 = random_tokens(size, vocab_size, generator, ctx.device)
            noise = coupling.sample_noise(x0, generator=generator)
            vis = [coupling.visible(noise, t, x0=x0) for t in times]
            for i, v in enumerate(vis):
                visible[i] += int(v.sum())
            code = torch.zeros(size, dtype=torch.long, device=ctx.device)
            for bit, index in enumerate(JOINT_TIMES_INDEX):
                code += vis[index].long() << bit
            patterns += torch.bincount(code, minlength=patterns.size).cpu().numpy()
            if tau_sample is None:
                m = min(n_tau, size)
                tau = coupling.unmask_time(noise[:m], x0=x0[:m]).to(torch.float64)
                for t, v in zip(times, vis):
                    disagree = (v[:m] != (t < tau)) & ((tau - t).abs() > 1e-6)
                    consistency_violations += int(disagree.sum())
                tau_sample = tau.cpu().numpy()
        ctx.count(n)
        per_method[method] = {"cdf": 1.0 - visible / n, "patterns": patterns / n, "tau": tau_sample}
        tests.append(stats.zero_violation_test(f"unmask_time consistent with visible, {method}", consistency_violations,
                                               len(tau_sample) * len(times), ctx.beta))
        ctx.tick(f"claim 5 {method}")
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    delta = stats.bonferroni(ctx.delta, 2 * len(pairs))
    for a, b in pairs:
        tests.append(stats.two_sample_test(f"unmasking-time CDF on 8 times: {a} vs {b}", per_method[a]["cdf"], per_method[b]["cdf"],
                                           n, n, delta, ctx.beta))
        tests.append(stats.two_sample_test(f"joint masks over 4 times (16 patterns): {a} vs {b}", per_method[a]["patterns"],
                                           per_method[b]["patterns"], n, n, delta, ctx.beta))
    theory_cdf = 1.0 - as_numpy(schedule.alpha(np.linspace(0, 1, 101)))
    return ClaimOutcome(
        tests=tests,
        checked=checked,
        plot_data={"unmasking_cdfs": {"times": times, "theory_t": np.linspace(0, 1, 101), "theory_cdf": theory_cdf,
                                      "methods": {k: {"cdf": v["cdf"], "tau": v["tau"]} for k, v in per_method.items()}}},
        notes=[f"K={vocab_size}, schedule {schedule!r}, {n} tokens per method, unmask_time on {n_tau} per method"],
    )

