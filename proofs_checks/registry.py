"""Claims, mutants and the runner that turns a check into a calibrated, reported result.

A claim's check is a function `check(ctx, **implementations) -> ClaimOutcome`.  Its
implementations (alpha_fn, project_fn, coupling_fn, ...) default to the code the trainer uses
(theory, duality, sampler) and are injected by keyword, so a mutant is the same check with one
implementation swapped for a planted bug.  The suite's false-fail budget is split evenly over
the Monte Carlo claims (Bonferroni); each check splits its share over its own sub-tests.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import torch

from .stats import TestResult, jsonable

SUITE_FALSE_FAIL_RATE = 1e-6
FALSE_PASS_RATE = 1e-3


@dataclass
class Context:
    """What a check needs besides its implementations: randomness, device, sizes, error budget.

    `delta` is the claim's false-fail budget (the check splits it over its sub-tests), `beta` the
    false-pass rate at which detectable discrepancies are stated, `scale` multiplies the default
    sample sizes (mutant runs may use a smaller scale), `quick` selects the small sizes.
    """

    seed: int
    device: torch.device
    quick: bool
    delta: float
    beta: float = FALSE_PASS_RATE
    scale: float = 1.0
    label: str = ""
    draws: int = 0
    progress: Callable[[str], None] | None = None

    def generator(self, *labels: Any) -> torch.Generator:
        """A torch.Generator on the context's device seeded by (seed, run label, labels):
        every claim and mutant run has its own stream, independent of the order of the runs."""
        key = "/".join([str(self.seed), self.label] + [str(x) for x in labels])
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63 - 1))
        return generator

    def size(self, default: int, quick: int) -> int:
        """Sample size: `quick` under --quick, else `default`, times `scale` (at least 1000)."""
        base = quick if self.quick else default
        return max(1000, int(round(base * self.scale)))

    def count(self, draws: int) -> None:
        """Record `draws` Monte Carlo draws (tokens, paths or latent vectors)."""
        self.draws += int(draws)

    def tick(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass
class ClaimOutcome:
    """What a check returns: its sub-tests, notes for the report, plot data, and which
    implementations it exercised."""

    tests: list[TestResult]
    notes: list[str] = field(default_factory=list)
    plot_data: dict[str, Any] = field(default_factory=dict)
    checked: dict[str, str] = field(default_factory=dict)


@dataclass
class Claim:
    """A registered claim.  `defaults()` builds the real implementations lazily (import time of
    theory/duality/sampler is paid only when the claim runs)."""

    id: int
    title: str
    statement: str
    kind: str
    method: str
    check: Callable[..., ClaimOutcome]
    defaults: Callable[[], dict[str, Any]]
    monte_carlo: bool = True


@dataclass
class Mutant:
    """A planted bug: `overrides(defaults)` returns the implementations to swap in."""

    name: str
    claim: int
    description: str
    overrides: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class ClaimReport:
    claim: Claim
    passed: bool
    tests: list[TestResult]
    draws: int
    seconds: float
    false_fail_rate: float
    detectable_discrepancy: float | None
    false_pass_rate: float
    statistic: float | None
    threshold: float | None
    notes: list[str]
    plot_data: dict[str, Any]
    checked: dict[str, str]
    error: str | None = None
    detectable_unit: str | None = None
    statistic_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "id": self.claim.id,
                "title": self.claim.title,
                "statement": self.claim.statement,
                "kind": self.claim.kind,
                "method": self.claim.method,
                "passed": self.passed,
                "n": self.draws,
                "false_fail_rate": self.false_fail_rate,
                "false_pass_rate": self.false_pass_rate,
                "detectable_discrepancy": self.detectable_discrepancy,
                "detectable_discrepancy_unit": self.detectable_unit,
                "statistic": self.statistic,
                "statistic_of": self.statistic_of,
                "threshold": self.threshold,
                "seconds": round(self.seconds, 3),
                "checked_implementations": self.checked,
                "notes": self.notes,
                "error": self.error,
                "subtests": [t.to_dict() for t in self.tests],
            }
        )


@dataclass
class MutantReport:
    mutant: Mutant
    caught: bool
    failed_tests: list[str]
    draws: int
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "name": self.mutant.name,
                "claim": self.mutant.claim,
                "description": self.mutant.description,
                "caught": self.caught,
                "caught_by": self.failed_tests,
                "n": self.draws,
                "seconds": round(self.seconds, 3),
                "error": self.error,
            }
        )


def _worst(tests: list[TestResult]) -> TestResult | None:
    """The deciding sub-test: the first failing one, else the one closest to its threshold."""
    for test in tests:
        if not test.passed:
            return test
    best, best_ratio = None, -math.inf
    for test in tests:
        if test.comparison != "<=":
            continue
        ratio = test.statistic / test.threshold if test.threshold > 0 else (0.0 if test.statistic == 0 else math.inf)
        if ratio > best_ratio:
            best, best_ratio = test, ratio
    return best or (tests[0] if tests else None)


def summarize(claim: Claim, outcome: ClaimOutcome, ctx: Context, seconds: float) -> ClaimReport:
    """Aggregate sub-tests: passed iff all pass; false-fail rate = Σ sub-test rates (union bound);
    detectable discrepancy = the largest over the Monte Carlo probability sub-tests (the claim
    detects, at the stated false-pass rate, any discrepancy at least this large in every one)."""
    tests = outcome.tests
    passed = bool(tests) and all(t.passed for t in tests)
    false_fail = float(sum(t.false_fail_rate for t in tests))
    probability_tests = [
        t for t in tests if t.detectable_discrepancy is not None and t.discrepancy_unit == "absolute probability"
    ]
    detectable = max((t.detectable_discrepancy for t in probability_tests), default=None)
    unit = "absolute probability" if detectable is not None else None
    if detectable is None:
        other = [t for t in tests if t.detectable_discrepancy is not None and t.false_pass_rate is not None]
        if other:
            chosen = max(other, key=lambda t: t.detectable_discrepancy)
            detectable, unit = chosen.detectable_discrepancy, chosen.discrepancy_unit
    worst = _worst(tests)
    return ClaimReport(
        claim=claim,
        passed=passed,
        tests=tests,
        draws=ctx.draws,
        seconds=seconds,
        false_fail_rate=false_fail,
        detectable_discrepancy=detectable,
        false_pass_rate=ctx.beta,
        statistic=None if worst is None else worst.statistic,
        threshold=None if worst is None else worst.threshold,
        notes=outcome.notes,
        plot_data=outcome.plot_data,
        checked=outcome.checked,
        detectable_unit=unit,
        statistic_of=None if worst is None else worst.name,
    )


def run_claim(claim: Claim, ctx: Context, overrides: dict[str, Any] | None = None) -> ClaimReport:
    """Run one claim's check with its default implementations (plus `overrides`).  An exception
    inside the check is a failed claim with the error recorded (never a crash of the suite)."""
    start = time.perf_counter()
    try:
        implementations = claim.defaults()
        implementations.update(overrides or {})
        outcome = claim.check(ctx, **implementations)
    except Exception as err:  # noqa: BLE001 - a crashing check is reported as a failing claim
        seconds = time.perf_counter() - start
        report = summarize(claim, ClaimOutcome(tests=[]), ctx, seconds)
        report.passed = False
        report.error = f"{type(err).__name__}: {err}"
        return report
    return summarize(claim, outcome, ctx, time.perf_counter() - start)


def run_mutant(mutant: Mutant, claim: Claim, ctx: Context) -> MutantReport:
    """Run the claim's check with the mutant's implementations; caught iff the claim fails.
    A mutant that makes the check raise counts as caught (the error is recorded)."""
    start = time.perf_counter()
    try:
        overrides = mutant.overrides(claim.defaults())
    except Exception as err:  # noqa: BLE001
        return MutantReport(mutant, False, [], 0, time.perf_counter() - start, error=f"building the mutant failed: {err}")
    report = run_claim(claim, ctx, overrides)
    failed = [t.name for t in report.tests if not t.passed]
    if report.error:
        failed.append(f"error: {report.error}")
    return MutantReport(mutant, not report.passed, failed, report.draws, time.perf_counter() - start, error=report.error)
