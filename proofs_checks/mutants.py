"""Planted bugs: for every Monte Carlo claim, implementations that are wrong in a way a real
bug could be, and that the claim's check must catch (a check that cannot fail is a defect)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .claims.shadow import shadow_mutants
from .registry import Mutant

# ------------------------------------------------------------------ bugged implementations


def alpha_exponent_k(alpha_fn: Callable[..., Any]) -> Callable[..., Any]:
    """α computed with Φ(z)^K instead of Φ(z)^{K−1} (i.e. α_{K+1})."""

    def masked_alpha_exponent_k(nu: Any, vocab_size: int) -> Any:
        return alpha_fn(nu, vocab_size + 1)

    return masked_alpha_exponent_k


def threshold_wrong_maximum(threshold_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Y = M − ε_k with M the max of K normals instead of K − 1 (the clean coordinate counted)."""

    def sample_threshold_wrong_maximum(shape: tuple[int, ...], vocab_size: int, generator: Any = None, device: Any = "cpu") -> Tensor:
        return threshold_fn(shape, vocab_size + 1, generator, device)

    return sample_threshold_wrong_maximum


def project_ties_to_x0(w: Float[Tensor, "*b K"], x0: Int[Tensor, "*b"], mask_id: int) -> Int[Tensor, "*b"]:
    """Projection that keeps x0 when it only ties the maximum (>= instead of >)."""
    index = x0.long().unsqueeze(-1)
    clean = torch.gather(w, -1, index).squeeze(-1)
    others = w.scatter(-1, index, float("-inf")).amax(dim=-1)
    return torch.where(clean >= others, x0, torch.full_like(x0, mask_id))


def project_argmax(w: Float[Tensor, "*b K"], x0: Int[Tensor, "*b"], mask_id: int) -> Int[Tensor, "*b"]:
    """The uniform-state projection (argmax token) used where the masked one is meant."""
    return torch.argmax(w, dim=-1).to(x0.dtype)


class FreshNoiseCoupling:
    """Wraps a coupling but draws fresh noise at every `visible`/`mask` call: right marginals,
    no shared path (what a per-time q_sample would do)."""

    def __init__(self, inner: Any, seed: int = 424242) -> None:
        self.inner = inner
        self.method = inner.method
        self.vocab_size = inner.vocab_size
        self.mask_id = inner.mask_id
        self.seed = seed
        self._generator: torch.Generator | None = None

    def _fresh(self, noise: Tensor, x0: Tensor | None) -> Tensor:
        if self._generator is None or self._generator.device != noise.device:
            self._generator = torch.Generator(device=noise.device).manual_seed(self.seed)
        like = x0 if x0 is not None else torch.zeros(noise.shape[: noise.ndim - (1 if self.method == "gaussian" else 0)],
                                                      dtype=torch.long, device=noise.device)
        return self.inner.sample_noise(like, generator=self._generator)

    def sample_noise(self, x0: Tensor, generator: Any = None) -> Tensor:
        return self.inner.sample_noise(x0, generator=generator)

    def visible(self, noise: Tensor, t: Any, x0: Tensor | None = None) -> Tensor:
        return self.inner.visible(self._fresh(noise, x0), t, x0=x0)

    def mask(self, x0: Tensor, noise: Tensor, t: Any) -> Tensor:
        return self.inner.mask(x0, self._fresh(noise, x0), t)

    def pair(self, x0: Tensor, noise: Tensor, s: Any, t: Any) -> tuple[Tensor, Tensor]:
        return self.mask(x0, noise, s), self.mask(x0, noise, t)

    def unmask_time(self, noise: Tensor, x0: Tensor | None = None) -> Tensor:
        return self.inner.unmask_time(noise, x0=x0)


class WrongMaximumCoupling:
    """A threshold coupling whose Y uses the max of K normals instead of K − 1."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.method = inner.method
        self.vocab_size = inner.vocab_size
        self.mask_id = inner.mask_id

    def sample_noise(self, x0: Tensor, generator: Any = None) -> Tensor:
        from duality import sample_threshold

        return sample_threshold(tuple(x0.shape), self.vocab_size + 1, generator=generator, device=x0.device)

    def visible(self, noise: Tensor, t: Any, x0: Tensor | None = None) -> Tensor:
        return self.inner.visible(noise, t, x0=x0)

    def mask(self, x0: Tensor, noise: Tensor, t: Any) -> Tensor:
        return self.inner.mask(x0, noise, t)

    def pair(self, x0: Tensor, noise: Tensor, s: Any, t: Any) -> tuple[Tensor, Tensor]:
        return self.inner.pair(x0, noise, s, t)

    def unmask_time(self, noise: Tensor, x0: Tensor | None = None) -> Tensor:
        return self.inner.unmask_time(noise, x0=x0)


def coupling_with(wrapper: Callable[[Any], Any], methods: tuple[str, ...], coupling_fn: Callable[..., Any]) -> Callable[..., Any]:
    """coupling_fn whose couplings of the given methods are wrapped by `wrapper`."""

    def make_coupling(schedule: Any, vocab_size: int, mask_id: int, method: str = "threshold") -> Any:
        coupling = coupling_fn(schedule, vocab_size, mask_id, method)
        return wrapper(coupling) if method in methods else coupling

    make_coupling.__name__ = f"{getattr(wrapper, '__name__', 'wrapped')}_coupling"
    return make_coupling


def reverse_prob_wrong_denominator(schedule: Any, s: Any, t: Any) -> Any:
    """(α_s − α_t)/(1 − α_s) instead of (α_s − α_t)/(1 − α_t)."""
    alpha_s, alpha_t = float(schedule.alpha(s)), float(schedule.alpha(t))
    return min(1.0, (alpha_s - alpha_t) / (1.0 - alpha_s))


def ou_shared_noise(x0: Tensor, vocab_size: int, alpha_tilde: np.ndarray, sigma_tilde: np.ndarray, generator: torch.Generator):
    """The deterministic (shared-noise) path where the fresh-noise OU path is meant: ρ = 1."""
    onehot = torch.nn.functional.one_hot(x0, vocab_size).to(torch.float64)
    eps = torch.randn(x0.shape + (vocab_size,), dtype=torch.float64, generator=generator, device=x0.device)
    for i in range(len(alpha_tilde)):
        yield alpha_tilde[i] * onehot + sigma_tilde[i] * eps


def ou_not_variance_preserving(x0: Tensor, vocab_size: int, alpha_tilde: np.ndarray, sigma_tilde: np.ndarray, generator: torch.Generator):
    """OU step with innovation sqrt(1 − ρ) instead of sqrt(1 − ρ²): the noise variance drifts."""
    onehot = torch.nn.functional.one_hot(x0, vocab_size).to(torch.float64)
    eps = torch.randn(x0.shape + (vocab_size,), dtype=torch.float64, generator=generator, device=x0.device)
    for i in range(len(alpha_tilde)):
        if i > 0:
            rho = alpha_tilde[i] / alpha_tilde[i - 1] * sigma_tilde[i - 1] / sigma_tilde[i]
            fresh = torch.randn(eps.shape, dtype=torch.float64, generator=generator, device=eps.device)
            eps = rho * eps + float(np.sqrt(max(0.0, 1.0 - rho))) * fresh
        yield alpha_tilde[i] * onehot + sigma_tilde[i] * eps


def scaled_schedule(schedule: Any, factor: float) -> Any:
    """The masked schedule factor·α(t) (e.g. 0.99: off by 1 % relative)."""
    from theory import MaskSchedule

    return MaskSchedule(alpha=lambda t: factor * schedule.alpha(t), alpha_deriv=lambda t: factor * schedule.alpha_deriv(t))


def calibrate_off_by_one_percent(calibrate_fn: Callable[..., Any]) -> Callable[..., Any]:
    def calibrate_scaled(schedule: Any, vocab_size: int) -> Any:
        return calibrate_fn(scaled_schedule(schedule, 0.99), vocab_size)

    return calibrate_scaled


def uniform_alpha_wrong_denominator(alpha_fn: Callable[..., Any]) -> Callable[..., Any]:
    """(Kα − 1)/K instead of (Kα − 1)/(K − 1)."""

    def uniform_alpha_over_k(nu: Any, vocab_size: int) -> Any:
        return (vocab_size * np.asarray(alpha_fn(nu, vocab_size)) - 1.0) / vocab_size

    return uniform_alpha_over_k


def derivative_exponent_k(deriv_fn: Callable[..., Any]) -> Callable[..., Any]:
    def masked_alpha_deriv_exponent_k(nu: Any, vocab_size: int) -> Any:
        return deriv_fn(nu, vocab_size + 1)

    return masked_alpha_deriv_exponent_k


def context_free_denoiser_of(toy: Any) -> Callable[[Tensor], Tensor]:
    return toy.context_free_denoiser


def elbo_weight_wrong_denominator(schedule: Any, t: Any) -> Any:
    """−α′(t)/α(t) instead of −α′(t)/(1 − α(t))."""
    return -float(schedule.alpha_deriv(t)) / float(schedule.alpha(t))


def teacher_batch_schedule_off(teacher_batch_fn: Callable[..., Any]) -> Callable[..., Any]:
    def teacher_batch_scaled(x0: Tensor, schedule: Any, mask_id: int, generator: Any = None, t: Any = None) -> Any:
        return teacher_batch_fn(x0, scaled_schedule(schedule, 0.99), mask_id, generator, t)

    return teacher_batch_scaled


def distillation_batch_fresh_noise(x0: Tensor, coupling: Any, t: Tensor, dt: float, generator: Any = None, noise: Any = None):
    """z_t and z_s from independent noises (two q_samples) instead of one shared noise."""
    s = (t - dt).clamp(min=0.0)
    return coupling.mask(x0, coupling.sample_noise(x0, generator=generator), t), coupling.mask(
        x0, coupling.sample_noise(x0, generator=generator), s), s


# ------------------------------------------------------------------------------ registry


def all_mutants() -> list[Mutant]:
    """Every planted bug, with the claim that must catch it."""
    return [
        Mutant("alpha_exponent_K", 1, "alpha_K computed with Phi^K instead of Phi^(K-1)",
               lambda d: {"alpha_fn": alpha_exponent_k(d["alpha_fn"])}),
        Mutant("threshold_wrong_maximum", 1, "threshold Y drawn from the max of K normals instead of K-1",
               lambda d: {"threshold_fn": threshold_wrong_maximum(d["threshold_fn"])}),
        Mutant("ties_to_x0", 2, "projection keeps x0 on ties (>= instead of >)", lambda d: {"project_fn": project_ties_to_x0}),
        Mutant("argmax_projection", 2, "uniform-state argmax used as the masked projection", lambda d: {"project_fn": project_argmax}),
        Mutant("fresh_noise_per_time", 3, "fresh noise per time instead of shared noise (gaussian and threshold couplings)",
               lambda d: {"coupling_fn": coupling_with(FreshNoiseCoupling, ("gaussian", "threshold"), d["coupling_fn"])}),
        Mutant("reverse_posterior_denominator", 3, "reverse posterior (a_s - a_t)/(1 - a_s) instead of /(1 - a_t)",
               lambda d: {"reverse_prob_fn": reverse_prob_wrong_denominator}),
        Mutant("ou_shared_noise", 4, "counterexample path built with shared noise (rho = 1): no reappearance to find",
               lambda d: {"path_fn": ou_shared_noise}),
        Mutant("ou_not_variance_preserving", 4, "OU innovation sqrt(1 - rho) instead of sqrt(1 - rho^2)",
               lambda d: {"path_fn": ou_not_variance_preserving}),
        Mutant("gaussian_fresh_noise", 5, "gaussian coupling draws fresh noise per time",
               lambda d: {"coupling_fn": coupling_with(FreshNoiseCoupling, ("gaussian",), d["coupling_fn"])}),
        Mutant("threshold_coupling_wrong_maximum", 5, "threshold coupling's Y from the max of K normals instead of K-1",
               lambda d: {"coupling_fn": coupling_with(WrongMaximumCoupling, ("threshold",), d["coupling_fn"])}),
        Mutant("schedule_off_1pct", 6, "calibration of a schedule off by 1 % relative (0.99 alpha)",
               lambda d: {"calibrate_fn": calibrate_off_by_one_percent(d["calibrate_fn"])}),
        Mutant("uniform_alpha_denominator", 7, "uniform schedule (K alpha - 1)/K instead of /(K - 1)",
               lambda d: {"uniform_alpha_fn": uniform_alpha_wrong_denominator(d["alpha_fn"])}),
        Mutant("derivative_exponent_K", 8, "d alpha/d nu of alpha_{K+1} (exponent K instead of K-1)",
               lambda d: {"deriv_fn": derivative_exponent_k(d["deriv_fn"])}),
        Mutant("context_free_denoiser", 9, "denoiser ignores the visible context (position marginals)",
               lambda d: {"denoiser_fn": context_free_denoiser_of}),
        Mutant("elbo_weight_denominator", 9, "continuous ELBO weight -alpha'/alpha instead of -alpha'/(1 - alpha)",
               lambda d: {"elbo_weight_fn": elbo_weight_wrong_denominator}),
        Mutant("teacher_schedule_off_1pct", 10, "teacher batches masked with a schedule off by 1 % relative",
               lambda d: {"teacher_batch_fn": teacher_batch_schedule_off(d["teacher_batch_fn"])}),
        Mutant("distillation_fresh_noise", 10, "distillation pair from two independent noises",
               lambda d: {"distillation_batch_fn": distillation_batch_fresh_noise}),
        *shadow_mutants(12),
    ]
