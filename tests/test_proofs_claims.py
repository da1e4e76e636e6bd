"""Claims of proofs_checks at small sizes, their determinism, and the mutant registry.

Each Monte Carlo claim run here uses the suite's per-claim false-fail budget of 1e-7 (so a
spurious failure of this file has probability < 1e-6); the sizes are a fraction of --quick."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from proofs_checks.claims import all_claims
from proofs_checks.claims.toy import MarkovToy
from proofs_checks.claims.trainer import trainer_batch_functions
from proofs_checks.mutants import all_mutants
from proofs_checks.registry import Claim, ClaimOutcome, Context, run_claim, run_mutant

CLAIMS = {claim.id: claim for claim in all_claims()}


def small_context(label: str, scale: float = 0.3, seed: int = 7) -> Context:
    return Context(seed=seed, device=torch.device("cpu"), quick=True, delta=1e-7, scale=scale, label=label)


@pytest.mark.parametrize("claim_id", [2, 3, 6, 8, 9])
def test_claim_passes_at_small_size(claim_id: int) -> None:
    report = run_claim(CLAIMS[claim_id], small_context(f"small-{claim_id}"))
    assert report.error is None
    assert report.passed, [t.name for t in report.tests if not t.passed]
    assert report.draws > 0
    assert report.false_fail_rate <= 1e-7 * (1 + 1e-9)


def test_claim_is_deterministic_for_a_seed() -> None:
    first = run_claim(CLAIMS[1], small_context("det", scale=0.1))
    second = run_claim(CLAIMS[1], small_context("det", scale=0.1))
    assert [t.statistic for t in first.tests] == [t.statistic for t in second.tests]
    other = run_claim(CLAIMS[1], small_context("det", scale=0.1, seed=8))
    assert [t.statistic for t in first.tests] != [t.statistic for t in other.tests]


def test_every_monte_carlo_claim_has_a_mutant_and_mutants_name_real_claims() -> None:
    mutants = all_mutants()
    monte_carlo = {c.id for c in CLAIMS.values() if c.monte_carlo}
    assert monte_carlo <= {m.claim for m in mutants}
    assert {m.claim for m in mutants} <= set(CLAIMS)
    assert len({m.name for m in mutants}) == len(mutants)


@pytest.mark.parametrize("name", ["ties_to_x0", "fresh_noise_per_time", "ou_shared_noise", "schedule_off_1pct", "derivative_exponent_K"])
def test_mutant_is_caught_at_small_size(name: str) -> None:
    mutant = next(m for m in all_mutants() if m.name == name)
    report = run_mutant(mutant, CLAIMS[mutant.claim], small_context(f"mutant-{name}", scale=0.5))
    assert report.error is None
    assert report.caught and report.failed_tests


def test_a_crashing_check_is_a_failed_claim() -> None:
    def broken(ctx: Context, *, value: int) -> ClaimOutcome:
        raise RuntimeError("boom")

    claim = Claim(99, "broken", "never holds", "monte carlo", "none", broken, lambda: {"value": 1})
    report = run_claim(claim, small_context("broken"))
    assert not report.passed and report.error is not None and "boom" in report.error


def test_claim_10_checks_the_samplers_own_batch_functions() -> None:
    """Identity, not equality of behaviour: claim 10 must exercise the very functions the trainer calls."""
    from sampler.batches import teacher_batch
    from sampler.batches import distillation_batch

    found = trainer_batch_functions()
    assert found["teacher_batch_fn"] is teacher_batch
    assert found["distillation_batch_fn"] is distillation_batch
    defaults = CLAIMS[10].defaults()
    assert defaults["teacher_batch_fn"] is teacher_batch
    assert defaults["distillation_batch_fn"] is distillation_batch


def test_claim_10_fails_loudly_when_the_samplers_batch_functions_cannot_be_imported(monkeypatch) -> None:
    """No stand-in: a missing sampler module makes claim 10 fail with the import error."""
    monkeypatch.setitem(sys.modules, "sampler.batches", None)  # `from sampler.batches import ...` now raises
    with pytest.raises(ImportError):
        trainer_batch_functions()
    report = run_claim(CLAIMS[10], small_context("no-sampler", scale=0.2))
    assert not report.passed and report.tests == []
    assert report.error is not None and "sampler.batches" in report.error


def test_markov_toy_denoiser_is_normalised_and_exact_on_visible_tokens() -> None:
    toy = MarkovToy()
    generator = torch.Generator().manual_seed(0)
    x0 = toy.sample(500, generator, torch.device("cpu"))
    assert int(x0.min()) >= 0 and int(x0.max()) < toy.vocab_size
    z = torch.where(torch.rand(x0.shape, generator=generator) < 0.5, x0, torch.full_like(x0, toy.vocab_size))
    log_probs = toy.exact_denoiser(z)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(x0.shape, dtype=torch.float64))
    visible = z != toy.vocab_size
    picked = torch.gather(log_probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    assert torch.all(picked[visible] == 0.0)  # a visible token's posterior is a point mass on it
    # nothing masked at alpha = 1; at alpha = 0 every position pays its marginal entropy
    assert float(toy.loss_polynomial(np.array(1.0))) == 0.0
    marginal_entropy = 0.0
    for position in range(toy.length):
        p = np.array([toy.probs[toy.sequences[:, position] == v].sum() for v in range(toy.vocab_size)])
        marginal_entropy -= float((p * np.log(p)).sum())
    assert abs(float(toy.loss_polynomial(np.array(0.0))) - marginal_entropy) < 1e-12


def test_trainer_batch_claim_passes_on_the_samplers_functions() -> None:
    report = run_claim(CLAIMS[10], small_context("trainer", scale=0.2))
    assert report.error is None
    assert report.passed, [t.name for t in report.tests if not t.passed]
    assert report.checked["teacher_batch_fn"].startswith("sampler.")
    assert report.checked["distillation_batch_fn"].startswith("sampler.")
