"""The claims of the duality, each a check of injectable implementations, one module per group.

Every check takes a Context (randomness, device, sizes, false-fail budget) and keyword
implementations whose defaults are the code the trainer uses; a mutant swaps one of them.
Each docstring states the claim, the draws and the statistical method.

    marginal     claims 1, 2, 7: P(project = x0) = α_K(ν), support {x0, mask}, uniform-state relation
    path         claims 3, 4: shared noise gives a masked path; a fresh-noise OU path does not
    coupling     claim 5: the gaussian, threshold and uniform couplings are equal in law
    calibration  claims 6, 8: ν(t) calibrated to a schedule; dα/dν
    elbo         claim 9: discrete ELBO → continuous ELBO, on the exact toy of `toy`
    trainer      claim 10: the trainer's own batch functions (imported, never substituted)
    symbolic     claim 11: the sympy proofs
    shadow       claim 12: the noise-shared (shadow) sampler has the ancestral sampler's law
    common       helpers shared by the checks
"""

from __future__ import annotations

from typing import Any

from ..registry import Claim
from .calibration import check_calibration, check_derivative, default_schedules
from .coupling import check_coupling_equivalence
from .elbo import check_elbo, exact_denoiser_of
from .marginal import check_marginal_duality, check_support, check_uniform_state
from .path import check_counterexample, check_path_duality, ou_path
from .shadow import shadow_claim
from .symbolic import check_symbolic, symbolic_run_all
from .trainer import check_trainer_batches, trainer_batch_functions

__all__ = ["all_claims"]


def _theory() -> Any:
    import theory

    return theory


def _duality() -> Any:
    import duality

    return duality


def all_claims() -> list[Claim]:
    """The registered claims, in report order."""
    th, du = _theory, _duality
    return [
        Claim(1, "Marginal duality", "P(project(w_t) = x0) = alpha_K(nu) for K in {2, 3, 10, 1000, 50258} over a grid of nu "
              "(materialised Gaussian for K <= 10, O(1) threshold draws for every K)", "monte carlo", "DKW",
              check_marginal_duality,
              lambda: {"alpha_fn": th().masked_alpha, "project_fn": du().project, "threshold_fn": du().sample_threshold}),
        Claim(2, "Support", "the projection only ever yields x0 or the mask (x0 iff w[x0] is the strict maximum; ties -> mask)",
              "monte carlo (universal)", "zero-violation", check_support, lambda: {"project_fn": du().project}),
        Claim(3, "Path duality", "with shared noise the masks are nested, P(vis t | vis s) = alpha_t/alpha_s and "
              "P(vis s | masked t) = (alpha_s - alpha_t)/(1 - alpha_t)", "monte carlo", "exact binomial (conditional) + zero-violation",
              check_path_duality,
              lambda: {"coupling_fn": du().MaskedCoupling, "schedule_fn": th().LogLinearSchedule,
                       "reverse_prob_fn": du().reverse_unmask_prob}),
        Claim(4, "Counterexample (fresh-noise OU path)", "a Markov OU Gaussian path with fresh noise, projected, has the right "
              "marginals but tokens reappear as t grows (rate > 0 with confidence)", "monte carlo",
              "exact binomial + Clopper-Pearson", check_counterexample,
              lambda: {"path_fn": ou_path, "project_fn": du().project, "calibrate_fn": th().calibrate,
                       "schedule_fn": th().LogLinearSchedule}),
        Claim(5, "Three couplings equal in law", "gaussian, threshold and uniform couplings give the same law of unmasking "
              "times and of joint masks over a time grid", "monte carlo", "two-sample Hoeffding + zero-violation",
              check_coupling_equivalence, lambda: {"coupling_fn": du().MaskedCoupling, "schedule_fn": th().CosineSchedule}),
        Claim(6, "Schedule calibration", "calibrated nu(t) reproduces log-linear, cosine and polynomial alpha(t)",
              "numerical + monte carlo", "DKW + numerical tolerance", check_calibration,
              lambda: {"calibrate_fn": th().calibrate, "alpha_fn": th().masked_alpha, "threshold_fn": du().sample_threshold,
                       "schedules_fn": default_schedules}),
        Claim(7, "Uniform-state relation", "P(argmax(w) = x0) = alpha_K(nu) = uniform_alpha + (1 - uniform_alpha)/K and every "
              "other token has probability (1 - uniform_alpha)/K", "monte carlo", "DKW + exact binomial", check_uniform_state,
              lambda: {"uniform_alpha_fn": th().uniform_alpha, "alpha_fn": th().masked_alpha}),
        Claim(8, "Derivative", "d alpha/d nu agrees with finite differences and with a Monte Carlo score-function estimate",
              "numerical + monte carlo", "empirical Bernstein + numerical tolerance", check_derivative,
              lambda: {"alpha_fn": th().masked_alpha, "deriv_fn": th().masked_alpha_deriv,
                       "max_sampler": du().max_of_standard_normals}),
        Claim(9, "ELBO", "with an exact denoiser the discrete-time ELBO converges to the continuous-time weighted cross-entropy "
              "as steps grow (Markov-chain toy, exact by enumeration; Monte Carlo estimate matches)", "numerical + monte carlo",
              "Bernstein (exact variance) + numerical tolerance", check_elbo,
              lambda: {"mask_fn": du().q_sample, "step_weight_fn": du().reverse_unmask_prob, "elbo_weight_fn": du().elbo_weight,
                       "denoiser_fn": exact_denoiser_of, "schedule_fn": th().LogLinearSchedule}),
        Claim(10, "Trainer batches", "the masking the sampler uses for teacher training and distillation passes claims 1 and 3",
              "monte carlo", "exact binomial + Bernstein + zero-violation", check_trainer_batches,
              lambda: {**trainer_batch_functions(), "coupling_fn": du().MaskedCoupling, "schedule_fn": th().LogLinearSchedule}),
        Claim(11, "Symbolic proofs", "theory.symbolic.run_all(): the sympy proofs of the theory issue", "symbolic", "sympy",
              check_symbolic, lambda: {"run_all": symbolic_run_all()}, monte_carlo=False),
        shadow_claim(12),
    ]
