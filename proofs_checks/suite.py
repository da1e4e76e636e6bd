"""Run every claim and every mutant: the verification suite behind `mcd verify`."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .claims import all_claims
from .mutants import all_mutants
from .registry import FALSE_PASS_RATE, SUITE_FALSE_FAIL_RATE, ClaimReport, Context, MutantReport, run_claim, run_mutant


MUTANT_SCALE = 0.5  # mutants run at half the --quick sample sizes (each is still caught by a wide margin)


@dataclass
class SuiteResult:
    seed: int
    quick: bool
    device: str
    seconds: float
    claims: list[ClaimReport]
    mutants: list[MutantReport]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.claims) and all(m.caught for m in self.mutants)

    @property
    def total_draws(self) -> int:
        return sum(c.draws for c in self.claims)

    @property
    def suite_false_fail_rate(self) -> float:
        return float(sum(c.false_fail_rate for c in self.claims))


def resolve_device(name: str) -> torch.device:
    """torch.device for 'cpu' or 'cuda' (ValueError naming the device when cuda is unavailable)."""
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False on this machine")
    return torch.device(name)


def package_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for name in ("latent-shadows", "torch", "numpy", "scipy", "sympy", "matplotlib", "tqdm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_suite(
    seed: int = 0,
    quick: bool = False,
    device: str = "cpu",
    claim_ids: list[int] | None = None,
    with_mutants: bool = True,
    progress: bool = True,
) -> SuiteResult:
    """Run the claims (all, or those in `claim_ids`) and their mutants.

    False-fail budget: SUITE_FALSE_FAIL_RATE split evenly over the Monte Carlo claims of the
    whole registry (so a subset run keeps the per-claim rates of a full run).  Mutants run at half
    the --quick sample sizes in both modes (each is caught by a wide margin there)."""
    from tqdm import tqdm

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    torch_device = resolve_device(device)
    registry = all_claims()
    per_claim = SUITE_FALSE_FAIL_RATE / sum(1 for c in registry if c.monte_carlo)
    claims = [c for c in registry if claim_ids is None or c.id in claim_ids]
    if claim_ids is not None:
        unknown = sorted(set(claim_ids) - {c.id for c in registry})
        if unknown:
            raise ValueError(f"claim ids {unknown} are not registered (known: {[c.id for c in registry]})")
    by_id = {c.id: c for c in registry}
    mutants = [m for m in all_mutants() if with_mutants and m.claim in {c.id for c in claims}]
    start = time.perf_counter()
    bar = tqdm(total=len(claims) + len(mutants), file=sys.stderr, disable=not progress, unit="check", dynamic_ncols=True)
    claim_reports, mutant_reports = [], []
    try:
        for claim in claims:
            bar.set_description(f"claim {claim.id}: {claim.title}")
            ctx = Context(seed=seed, device=torch_device, quick=quick, delta=per_claim if claim.monte_carlo else 0.0,
                          beta=FALSE_PASS_RATE, label=f"claim-{claim.id}", progress=bar.set_postfix_str)
            claim_reports.append(run_claim(claim, ctx))
            bar.update(1)
        for mutant in mutants:
            bar.set_description(f"mutant {mutant.name}")
            ctx = Context(seed=seed, device=torch_device, quick=True, delta=per_claim, beta=FALSE_PASS_RATE,
                          scale=MUTANT_SCALE, label=f"mutant-{mutant.name}", progress=bar.set_postfix_str)
            mutant_reports.append(run_mutant(mutant, by_id[mutant.claim], ctx))
            bar.update(1)
    finally:
        bar.close()
    return SuiteResult(seed=seed, quick=quick, device=str(torch_device), seconds=time.perf_counter() - start,
                       claims=claim_reports, mutants=mutant_reports, versions=package_versions())


def as_json(result: SuiteResult) -> dict[str, Any]:
    """The machine-readable report (schema documented in proofs_checks.report)."""
    return {
        "passed": result.passed,
        "seed": result.seed,
        "quick": result.quick,
        "device": result.device,
        "seconds": round(result.seconds, 3),
        "total_draws": result.total_draws,
        "suite_false_fail_rate": result.suite_false_fail_rate,
        "suite_false_fail_budget": SUITE_FALSE_FAIL_RATE,
        "false_pass_rate": FALSE_PASS_RATE,
        "package_versions": result.versions,
        "claims": [c.to_dict() for c in result.claims],
        "mutants": [m.to_dict() for m in result.mutants],
    }
