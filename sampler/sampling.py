"""Ancestral samplers for masked diffusion, as plain functions over a denoiser (k-diffusion style).

A denoiser is any callable (z: Int[B, L], t: Float[B]) -> log p(x0 | z_t): Float[B, L, K].

One ancestral step t -> s < t (duality.posterior_step): every masked token unmasks with
probability (α_s − α_t)/(1 − α_t), to a category drawn in float64 from
p(x0 | z_t)^{1/T} / Σ p^{1/T} (temperature T); visible tokens stay.  N steps use the uniform grid t_i = i/N from t = 1 to 0;
at s = 0 (α = 1) every remaining mask is filled.  `final_greedy` takes the argmax instead
of a draw in that last step.

Caching: without time conditioning p(x0 | z_t) depends on z_t only, so when a step changed
no token of a sequence the previous output is reused (`cached=True`).  The random draws
are consumed identically, so cached and uncached runs agree exactly for the same seed.

Conditioning: `fixed` (Int[N, L], mask_id where free) pins tokens: a prefix, or any set of
positions (infilling).  Pinned tokens are visible from the start and never change.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from duality import posterior_step, reverse_unmask_prob
from theory.checks import MAX_SEED, check_int, check_seed  # noqa: F401  (MAX_SEED, check_seed: re-exported)

from .protocols import Denoiser, Schedule, reads_shadow_noise


def check_positive_int(value: Any, name: str) -> int:
    """theory.checks.check_int with minimum 1."""
    return check_int(value, name, 1)


def check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if temperature != temperature or temperature == float("inf"):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    return float(temperature)


def prefix_tokens(prefix: Any, num_samples: int, seq_len: int, vocab_size: int, mask_id: int) -> Int[Tensor, "N L"] | None:
    """The samplers' `fixed` argument for a prompt: Int[N, L] holding the token ids `prefix` in the first positions
    and mask_id elsewhere; None for an empty or absent prefix.  ValueError when it is longer than seq_len or an id
    lies outside [0, vocab_size)."""
    if prefix is None:
        return None
    ids = torch.as_tensor(prefix, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        return None
    if ids.numel() > seq_len:
        raise ValueError(f"prefix has {ids.numel()} tokens, more than seq_len={seq_len}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"prefix token ids must lie in [0, {vocab_size}), got {ids.tolist()[:8]}")
    fixed = torch.full((num_samples, seq_len), mask_id, dtype=torch.long)
    fixed[:, : ids.numel()] = ids
    return fixed


def time_grid(num_steps: int) -> Float[Tensor, "N1"]:
    """t_i = i/N for i = N..0: [1, (N−1)/N, ..., 0] in float64."""
    check_positive_int(num_steps, "num_steps")
    return torch.arange(num_steps, -1, -1, dtype=torch.float64) / num_steps


def reveal_probabilities(schedule: Schedule, steps: int) -> Float[Tensor, " N"]:
    """p_i = P(a token masked at t_i reveals at t_{i+1}) = (α(t_{i+1}) − α(t_i))/(1 − α(t_i)), i = 0..N−1,
    on `time_grid(steps)`, computed as `ancestral_sample` computes it (python floats through
    duality.reverse_unmask_prob).  The last step must reveal every remaining token (α(0) = 1)."""
    steps = check_positive_int(steps, "steps")
    grid = time_grid(steps).tolist()
    probs = [float(reverse_unmask_prob(schedule, grid[i + 1], grid[i])) for i in range(steps)]
    if probs[-1] != 1.0:
        raise ValueError(f"schedule must reach alpha(0) = 1 (its last step reveals with probability {probs[-1]}, "
                         "so the sampler would leave tokens masked)")
    return torch.tensor(probs, dtype=torch.float64)


def resolve_mask_id(denoiser: Denoiser, mask_id: Any = None) -> int:
    """`mask_id`, or the denoiser's `mask_id` attribute when None; a non-negative int."""
    mask_id = getattr(denoiser, "mask_id", None) if mask_id is None else mask_id
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
        raise ValueError(f"mask_id must be a non-negative int (the denoiser has no mask_id attribute), got {mask_id!r}")
    return mask_id


class StepTimes:
    """The grid t_i = (N − i)/N, i = 0..N, computed one entry at a time: the same float64 values as
    `time_grid(N).tolist()` (both are the correctly rounded quotient of two exact integers), but in constant
    memory, so a huge step count costs time linear in N (one posterior draw per step) and no memory."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = check_positive_int(num_steps, "num_steps")

    def __len__(self) -> int:
        return self.num_steps + 1

    def __getitem__(self, i: int) -> float:
        if not 0 <= i <= self.num_steps:
            raise IndexError(f"step index {i} outside 0..{self.num_steps}")
        return (self.num_steps - i) / self.num_steps

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))


def ancestral_step(
    denoiser: Denoiser,
    z_t: Int[Tensor, "B L"],
    t: float,
    s: float,
    schedule: Schedule,
    mask_id: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    greedy: bool = False,
    log_probs: Float[Tensor, "B L K"] | None = None,
) -> Int[Tensor, "B L"]:
    """One ancestral step z_t -> z_s (s < t); `log_probs` skips the denoiser call when given."""
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"need 0 <= s < t <= 1, got s={s!r}, t={t!r}")
    temperature = check_temperature(temperature)
    if log_probs is None:
        t_vec = torch.full((z_t.shape[0],), float(t), device=z_t.device)
        log_probs = denoiser(z_t, t_vec)
    return _posterior(log_probs, z_t, t, s, schedule, mask_id, generator, temperature, greedy)


def _posterior(
    log_probs: Tensor, z_t: Tensor, t: float, s: float, schedule: Schedule, mask_id: int,
    generator: torch.Generator | None, temperature: float, greedy: bool,
) -> Tensor:
    """duality.posterior_step: float64 categorical draws from log p / T (greedy = temperature 0,
    which consumes the same uniforms, so seeds stay paired).  The draws happen on the
    generator's device: a CPU generator gives the same samples on any device; a CUDA
    generator avoids moving the log-probs to the host."""
    where = generator.device if generator is not None else z_t.device
    z_s = posterior_step(
        log_probs.detach().to(where), z_t.to(where), s, t, schedule, mask_id, generator,
        temperature=0.0 if greedy else temperature, log_probs=True,
    )
    return z_s.to(z_t.device)


@torch.no_grad()
def ancestral_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    *,
    num_steps: int,
    num_samples: int,
    seq_len: int,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    final_greedy: bool = False,
    fixed: Int[Tensor, "N L"] | None = None,
    cached: bool = False,
    device: Any = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> Int[Tensor, "N L"]:
    """num_samples sequences of seq_len tokens in 0..vocab_size−1 (CPU int64) by N ancestral steps.

    Batches of `batch_size` run in order with the one generator, so a seed fixes the output
    (a CPU generator: the same output on any device).
    """
    check_positive_int(num_steps, "num_steps")
    check_positive_int(num_samples, "num_samples")
    check_positive_int(seq_len, "seq_len")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(vocab_size, "vocab_size")
    check_temperature(temperature)
    if reads_shadow_noise(denoiser):
        raise ValueError("denoiser reads the shadow noise (a shadow student): the plain ancestral sampler cannot feed it; "
                         "use sampler.shadow.noise.noise_shared_sample (or sampler.shadow.student.shadow_sample)")
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be an int outside the real tokens 0..{vocab_size - 1}, got {mask_id!r}")
    if fixed is not None:
        if tuple(fixed.shape) != (num_samples, seq_len):
            raise ValueError(f"fixed must have shape ({num_samples}, {seq_len}), got {tuple(fixed.shape)}")
        bad = (fixed != mask_id) & ((fixed < 0) | (fixed >= vocab_size))
        if bad.any():
            raise ValueError(f"fixed must hold tokens in 0..{vocab_size - 1} or mask_id={mask_id}")
    config = getattr(denoiser, "config", None)
    if cached and getattr(config, "time_conditioning", False):
        raise ValueError("cached=True needs a denoiser without time conditioning (its output depends on t)")
    grid = StepTimes(num_steps)
    out = []
    batches = range(0, num_samples, batch_size)
    if progress:
        batches = tqdm(batches, desc=f"sampling ({num_steps} steps)", unit="batch")
    for start in batches:
        n = min(batch_size, num_samples - start)
        z = torch.full((n, seq_len), mask_id, dtype=torch.long)
        if fixed is not None:
            z = fixed[start : start + n].cpu().clone()
        out.append(_sample_batch(denoiser, schedule, grid, z.to(device), mask_id, generator, temperature, final_greedy, cached))
    return torch.cat(out).cpu()


def _sample_batch(
    denoiser: Denoiser, schedule: Schedule, grid: StepTimes, z: Tensor, mask_id: int,
    generator: torch.Generator | None, temperature: float, final_greedy: bool, cached: bool,
) -> Tensor:
    n = z.shape[0]
    cache: Tensor | None = None
    changed = torch.ones(n, dtype=torch.bool, device=z.device)
    for i in range(len(grid) - 1):
        t, s = grid[i], grid[i + 1]
        if not (z == mask_id).any():
            break  # nothing left to reveal: later steps would change nothing and draw nothing
        t_vec = torch.full((n,), t, device=z.device)
        if not cached or cache is None:
            log_probs = denoiser(z, t_vec)
        else:
            log_probs = cache
            if changed.any():
                rows = changed.nonzero().squeeze(-1)
                log_probs[rows] = denoiser(z[rows], t_vec[rows])
        cache = log_probs if cached else None
        greedy = final_greedy and i == len(grid) - 2
        z_next = _posterior(log_probs, z, t, s, schedule, mask_id, generator, temperature, greedy)
        changed = (z_next != z).any(dim=-1)
        z = z_next
    return z


def sampling_throughput(
    denoiser: Denoiser, schedule: Schedule, num_steps: int, num_samples: int, seq_len: int, mask_id: int,
    vocab_size: int, seed: int = 0, **kwargs: Any,
) -> tuple[Tensor, float]:
    """(samples, tokens per second) of one ancestral_sample call."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    samples = ancestral_sample(denoiser, schedule, num_steps=num_steps, num_samples=num_samples, seq_len=seq_len, mask_id=mask_id, vocab_size=vocab_size, generator=gen, **kwargs)
    elapsed = time.perf_counter() - start
    return samples, samples.numel() / max(elapsed, 1e-9)
