"""Recall of the noise-shared sampler of a causal shadow student: a sequential importance bound.

The N-step noise-shared sampler (`sampler.shadow.noise.noise_shared_sample`) reads per token a reveal noise u (which
fixes the reveal time τ and so the step that reveals the token) and a category noise c ~ U(0, 1), the quantile
of its draw.  With a causal student (`ShadowConfig(head="causal")`), token l's conditional at its step,
p_l(· | z_t, t, all τ, {c_j : τ_j > τ_l}), reads the category noise only of tokens revealed before l (in
τ-descending order: earlier steps are in z_t, the same step's earlier tokens through the head).  So, given u,

    q_N(x | u) = Π_l P(c_l ∈ I_l) = Π_l |I_l|,    I_l = { c : quantile draw of p_l at c gives x_l }
                                                 (`sampler.shadow.noise.quantile_interval`, tempered as the sampler),

an integral over c that sequential importance sampling estimates without bias: walk the N steps on x's own
z_t (revealed values = x) and, within a step, the revealed tokens in τ-descending order; draw
c_l ~ Uniform(I_l) given the earlier c's and add log |I_l| to log w.  Then E[w | u] = q_N(x | u) and, with u
from the sampler's own law (`sample_shadow_noise`'s reveal part), E[w] = q_N(x).  By Jensen, for k draws,

    −log q_N(x)/L  <=  E[ −log((1/k) Σ_j w_j) ]/L,

the same bound as `sampler.quality.recall` gives a per-token-independent sampler (a student whose head adds
nothing gives exactly that bound on the same reveal patterns).  Cost per draw: one base pass per step and
one causal-head pass per revealed token, on the rows still walking (the head's output at the r-th revealed
token is exact once the r − 1 earlier c's are set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sampler.data.base import check_tokens
from sampler.quality.recall import bound_from_log_weights
from sampler.sampling import check_positive_int, check_temperature, time_grid
from sampler.shadow.noise import ShadowNoise, quantile_interval, sample_shadow_noise, shadow_coupling
from sampler.protocols import Schedule, reads_shadow_noise

_PLACEHOLDER = 0.5  # the category noise of tokens not yet walked: never read by the tokens walked before them
_BELOW_ONE = 1.0 - 2.0 ** -53


def shadow_recall_unavailable(denoiser: Any) -> str | None:
    """None when the sequential bound applies to `denoiser` (a causal shadow student drawn by quantile with its
    noise input on), else the reason it does not."""
    shadow = getattr(denoiser, "shadow", None)
    if not reads_shadow_noise(denoiser) or shadow is None:
        return f"{type(denoiser).__name__} is not a shadow student"
    if shadow.head != "causal":
        return (f"shadow student with head {shadow.head!r}: its noise features read every token's noise, so the "
                "noise-shared sampler's law is not tractable (recall needs head 'causal')")
    if getattr(denoiser, "draw", "quantile") != "quantile":
        return ("design-B shadow student (argmax draw): the category noise decides the token only through the "
                "network, so the interval of c giving a token is not an interval; no sequential bound")
    if getattr(denoiser, "ablation", "none") != "none":
        return f"noise ablation {denoiser.ablation!r} is on (recall is defined for the student as trained)"
    return None


def step_walk(
    student: Any, z: Int[Tensor, "B L"], t: float, x: Int[Tensor, "B L"], reveal: Float[Tensor, "B L"],
    revealing: Bool[Tensor, "B L"], temperature: float, generator: torch.Generator | None,
) -> Float[Tensor, " B"]:
    """Σ log |I_l| over the tokens revealed at one step t -> s (mask `revealing`), walked in τ-descending order,
    each c_l ~ Uniform(I_l) given the earlier ones; z is x's state at t (x shown where revealed earlier)."""
    batch = z.shape[0]
    device = z.device
    t_vec = torch.full((batch,), t, dtype=torch.float32, device=device)
    category = torch.full(z.shape, _PLACEHOLDER, dtype=torch.float64, device=device)
    noise = ShadowNoise(reveal, category, student.reveal_method, student.config.vocab_size)
    tau = student.reveal_times(noise).to(device)
    order = torch.argsort(torch.where(revealing, -tau, torch.inf), dim=-1, stable=True)
    counts = revealing.sum(dim=-1)
    log_w = torch.zeros(batch, dtype=torch.float64, device=device)
    with torch.no_grad():
        hidden = student.base.hidden(z, t_vec)
        base_log_probs = student.base.readout(hidden, z)
        for r in range(int(counts.max())):
            rows = (counts > r).nonzero().squeeze(-1)
            positions = order[rows, r]
            noise = ShadowNoise(reveal[rows], category[rows], student.reveal_method, student.config.vocab_size)
            delta = student.causal_delta(z[rows], t_vec[rows], noise, hidden[rows], base_log_probs[rows])
            at = torch.arange(len(rows), device=device)
            log_probs = torch.log_softmax(student.base.logits(hidden[rows, positions] + delta[at, positions]), dim=-1)
            low, width = quantile_interval(log_probs, x[rows, positions], temperature)
            uniform = torch.rand(len(rows), dtype=torch.float64, generator=generator).to(device)
            chosen = (low + width * uniform).clamp(min=torch.finfo(torch.float64).tiny, max=_BELOW_ONE)
            category[rows, positions] = chosen
            log_w[rows] += width.log()
    return log_w


def shadow_log_weights(
    student: Any, schedule: Schedule, heldout: Int[Tensor, "B L"], reveal: Float[Tensor, "k B L"], *, steps: int,
    temperature: float = 1.0, generator: torch.Generator | None = None, device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "k B"]:
    """log w per reveal-noise draw j and held-out x (module docstring): the N steps of the sampler on the grid
    t_i = 1 − i/N, a token revealed at t_i -> t_{i+1} iff masked at t_i and visible at t_{i+1} under the coupling
    (as `shadow_step` decides), its interval under the student's tempered conditional at (z_{t_i}, t_i)."""
    num_draws, num_sequences, seq_len = reveal.shape
    coupling = shadow_coupling(schedule, student.config.vocab_size, student.mask_id, student.reveal_method)
    grid = time_grid(steps).tolist()
    x_all = heldout.to(device).repeat(num_draws, 1)
    u_all = reveal.reshape(num_draws * num_sequences, seq_len).to(device)
    log_w = torch.zeros(num_draws * num_sequences, dtype=torch.float64, device=device)
    for start in range(0, x_all.shape[0], batch_size):
        x, u = x_all[start: start + batch_size], u_all[start: start + batch_size]
        z = torch.full_like(x, student.mask_id)
        for t, s in zip(grid[:-1], grid[1:]):
            revealing = (z == student.mask_id) & coupling.visible(u, torch.full((len(x),), s, dtype=torch.float64, device=device))
            if not bool(revealing.any()):
                continue
            log_w[start: start + batch_size] += step_walk(student, z, t, x, u, revealing, temperature, generator)
            z = torch.where(revealing, x, z)
        if bool((z == student.mask_id).any()):
            raise ValueError("the schedule leaves tokens masked after the last step (alpha(0) must be 1)")
    return log_w.reshape(num_draws, num_sequences).cpu()


def shadow_recall_per_sequence(
    student: Any, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int,
    temperatures: Sequence[float] = (1.0,), k: int = 4, generator: torch.Generator | None = None,
    device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "T B"]:
    """−log((1/k) Σ_j w_j)/L per temperature T and held-out x (the sequential importance bound; module
    docstring).  The k reveal noises are drawn once from the sampler's law (`sample_shadow_noise` with the
    student's reveal method) and shared by the temperatures.  ValueError, before any work, for a student the
    bound does not apply to (`shadow_recall_unavailable`)."""
    reason = shadow_recall_unavailable(student)
    if reason is not None:
        raise ValueError(f"student has no sequential recall bound: {reason}")
    steps = check_positive_int(steps, "steps")
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(temperatures, (int, float)) or len(temperatures) == 0:
        raise ValueError(f"temperatures must be a non-empty sequence of numbers, got {temperatures!r}")
    temperatures = [check_temperature(temperature) for temperature in temperatures]
    config = student.config
    x = check_tokens(heldout, config.vocab_size, "heldout")
    if x.shape[1] > config.seq_len:
        raise ValueError(f"heldout has length {x.shape[1]} > the student's seq_len={config.seq_len}")
    noise = sample_shadow_noise(k * x.shape[0], x.shape[1], schedule, config.vocab_size, config.mask_id, generator,
                                method=student.reveal_method)
    reveal = noise.reveal.reshape(k, x.shape[0], x.shape[1])
    log_w = torch.stack([shadow_log_weights(student, schedule, x, reveal, steps=steps, temperature=temperature,
                                            generator=generator, device=device, batch_size=batch_size)
                         for temperature in temperatures])
    return bound_from_log_weights(log_w, x.shape[1])


def shadow_pool_log_weights(
    student: Any, schedule: Schedule, heldout: Int[Tensor, "B L"], *, steps: int, num_draws: int,
    temperature: float = 1.0, generator: torch.Generator | None = None, device: Any = "cpu", batch_size: int = 256,
) -> Float[Tensor, "k B"]:
    """log w for `num_draws` fresh reveal noises per held-out x, drawn from the sampler's own law
    (`sample_shadow_noise` with the student's reveal method), then the category noise walked by `shadow_log_weights`:
    one more block of the pool that `sampler.quality.recall_convergence.recall_versus_k(estimator="sequential")`
    averages over (E[w] = q_N(x) for every draw).  ValueError, before any work, where the bound does not apply."""
    reason = shadow_recall_unavailable(student)
    if reason is not None:
        raise ValueError(f"student has no sequential recall bound: {reason}")
    num_draws = check_positive_int(num_draws, "num_draws")
    x = check_tokens(heldout, student.config.vocab_size, "heldout")
    noise = sample_shadow_noise(num_draws * x.shape[0], x.shape[1], schedule, student.config.vocab_size,
                                student.config.mask_id, generator, method=student.reveal_method)
    return shadow_log_weights(student, schedule, x, noise.reveal.reshape(num_draws, x.shape[0], x.shape[1]),
                              steps=steps, temperature=temperature, generator=generator, device=device,
                              batch_size=batch_size)
