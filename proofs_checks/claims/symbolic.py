"""Claim 11: the sympy proofs of theory.symbolic, one sub-test each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import stats
from ..registry import ClaimOutcome, Context
from .common import checked_names


def check_symbolic(ctx: Context, *, run_all: Callable[[], Any]) -> ClaimOutcome:
    """theory.symbolic.run_all(): each sympy proof recorded with its own pass/fail (no randomness)."""
    tests = []
    for result in run_all():
        tests.append(stats.TestResult(
            name=str(result.name), method="sympy", statistic=0.0 if result.passed else 1.0, threshold=0.0, passed=bool(result.passed),
            n=0, false_fail_rate=0.0, false_pass_rate=None, detectable_discrepancy=None,
            details={"statement": str(result.statement), "detail": str(result.detail)}))
    if not tests:
        raise ValueError("theory.symbolic.run_all() returned no results")
    return ClaimOutcome(tests=tests, checked=checked_names(run_all=run_all))


def symbolic_run_all() -> Callable[[], Any]:
    """theory.symbolic.run_all, imported when claim 11 runs (sympy is slow to import)."""
    from theory.symbolic import run_all

    return run_all

