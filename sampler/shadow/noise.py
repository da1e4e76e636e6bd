"""The noise-shared ("shadow") ancestral sampler: every random choice read from per-token noise.

Per token two numbers, drawn once from a seed and kept across steps (`ShadowNoise`):

- reveal noise r from the duality's coupling (`duality.MaskedCoupling`, method "uniform": r = u,
  visible at t iff u < α(t); method "threshold": r = Y, visible at t iff Y < ν(t)).  The token's
  reveal time is a deterministic function of r, and the visible sets are nested across times.
  The sampler starts from the all-masked sequence at t = 1, so r is drawn conditioned on
  "masked at t = 1" (u >= α(1), resp. Y >= ν(1)): a token that the coupling would show already at
  t = 1 has no value to show (there is no x0), and the ordinary sampler's first step reveals with
  probability (α_s − α_1)/(1 − α_1), which is exactly P(u < α_s | u >= α_1).
- category noise c ∈ (0, 1), float64: the quantile at which the token's value is read.

One step t -> s of `noise_shared_sample`: a masked token is revealed iff the coupling says it is
visible at s; its value is the inverse-CDF draw at quantile c over the categories sorted by
tempered probability, p^{1/T} / Σ p^{1/T} of the denoiser at (z_t, t), in descending order (ties by
ascending id), with float64 cumulative sums:

    x = σ(j*),  j* = min{ j : Σ_{i<=j} p_σ(i) > c · Σ_i p_i },   σ = stable descending argsort of p.

Law.  Given z_t, the tokens masked at t have r independent and distributed as r | masked at t, so
each is revealed at s independently with probability (α_s − α_t)/(1 − α_t); each c is uniform,
independent of everything before its reveal and used once, so the revealed value is distributed as
p^{1/T}(· | z_t).  Hence with a denoiser that ignores the noise the output has exactly the law of
`sampler.sampling.ancestral_sample` at the same step count (same grid t_i = i/N, same temperature,
same `fixed` tokens).  What changes is that the output is a deterministic function of the noise,
so a noise-conditioned denoiser (`NoiseConditionedDenoiser`) can coordinate the tokens it reveals
together.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from duality import MaskedCoupling

from ..protocols import Denoiser, NoiseConditionedDenoiser, Schedule, reads_shadow_noise  # noqa: F401  (NoiseConditionedDenoiser: its old import path)
from ..sampling import StepTimes, check_positive_int, check_temperature

REVEAL_METHODS = ("uniform", "threshold")
_SMALLEST_UNIFORM = torch.finfo(torch.float64).tiny
_MAX_REJECTION_ROUNDS = 10_000


@dataclass(frozen=True)
class ShadowNoise:
    """Per-token noise of the noise-shared sampler, both float64 of shape [B, L] on one device.

    reveal:   the coupling's noise for `method` ("uniform": u ∈ (0, 1); "threshold": Y, finite),
              conditioned on "masked at t = 1" when drawn by `sample_shadow_noise`.
    category: c ∈ (0, 1), the quantile of each token's draw over categories sorted by probability.
    vocab_size: the K the reveal noise was drawn for (the threshold law of Y depends on K).
    """

    reveal: Tensor  # Float64[B, L]; plain Tensor so that a bad value reaches the ValueErrors below
    category: Tensor  # Float64[B, L]
    method: str
    vocab_size: int

    def __post_init__(self) -> None:
        if self.method not in REVEAL_METHODS:
            raise ValueError(f"method must be one of {REVEAL_METHODS}, got {self.method!r}")
        check_positive_int(self.vocab_size, "vocab_size")
        for name in ("reveal", "category"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dtype != torch.float64 or value.ndim != 2:
                raise ValueError(f"{name} must be a float64 tensor of shape [B, L], got "
                                 f"{getattr(value, 'dtype', type(value).__name__)} of shape {tuple(getattr(value, 'shape', ()))}")
        if self.reveal.shape != self.category.shape:
            raise ValueError(f"reveal has shape {tuple(self.reveal.shape)} but category has shape {tuple(self.category.shape)}")
        if self.reveal.device != self.category.device:
            raise ValueError(f"reveal is on {self.reveal.device} but category is on {self.category.device}")
        if not bool(((self.category > 0) & (self.category < 1)).all()):
            raise ValueError("category must lie in the open interval (0, 1) (no NaN)")
        if self.method == "uniform" and not bool(((self.reveal > 0) & (self.reveal < 1)).all()):
            raise ValueError("reveal must lie in (0, 1) for method='uniform' (no NaN)")
        if self.method == "threshold" and not bool(torch.isfinite(self.reveal).all()):
            raise ValueError("reveal must be finite for method='threshold'")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.reveal.shape[0]), int(self.reveal.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.reveal.device

    def rows(self, start: int, stop: int) -> "ShadowNoise":
        """The noise of sequences start..stop−1 (views; re-validated, O(B·L))."""
        return ShadowNoise(self.reveal[start:stop], self.category[start:stop], self.method, self.vocab_size)

    def to(self, device: torch.device | str) -> "ShadowNoise":
        """The same noise on `device` (float64 kept; re-validated)."""
        return ShadowNoise(self.reveal.to(device), self.category.to(device), self.method, self.vocab_size)


def shadow_coupling(schedule: Schedule, vocab_size: int, mask_id: int, method: str) -> MaskedCoupling:
    """The coupling that turns reveal noise into visibility: MaskedCoupling(schedule, K, mask_id, method)."""
    if method not in REVEAL_METHODS:
        raise ValueError(f"method must be one of {REVEAL_METHODS}, got {method!r}")
    return MaskedCoupling(schedule, vocab_size, mask_id, method=method)


def sample_shadow_noise(
    num_samples: int,
    seq_len: int,
    schedule: Schedule,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    method: str = "uniform",
    device: Any = "cpu",
) -> ShadowNoise:
    """Draw ShadowNoise for num_samples × seq_len tokens: the coupling's reveal noise conditioned on
    "masked at t = 1" (redraws of the coupling's own sample_noise for the tokens visible at t = 1:
    exact rejection sampling, about α(1)/(1 − α(1)) extra draws per token), then c ~ U(0, 1) per
    token (float64, clamped away from 0).  Deterministic given `generator` (on `device`)."""
    check_positive_int(num_samples, "num_samples")
    check_positive_int(seq_len, "seq_len")
    coupling = shadow_coupling(schedule, vocab_size, mask_id, method)
    if float(schedule.alpha(1.0)) >= 1.0:
        raise ValueError("schedule must mask some tokens at t = 1 (alpha(1) < 1) for the sampler to start from all masks")
    shape = (num_samples, seq_len)
    placeholder = torch.zeros(shape, dtype=torch.long, device=device)
    reveal = coupling.sample_noise(placeholder, generator)
    for _ in range(_MAX_REJECTION_ROUNDS):
        redraw = coupling.visible(reveal, 1.0)
        count = int(redraw.sum())
        if count == 0:
            break
        reveal[redraw] = coupling.sample_noise(placeholder.new_zeros(count), generator)
    else:
        raise ValueError(f"could not draw reveal noise masked at t = 1 in {_MAX_REJECTION_ROUNDS} rounds (alpha(1) too close to 1)")
    category = torch.rand(shape, dtype=torch.float64, device=device, generator=generator).clamp_(min=_SMALLEST_UNIFORM)
    return ShadowNoise(reveal, category, method, int(vocab_size))


TOP_K = 64
HISTOGRAM_BINS = 2048  # 16 bins per octave of weight: 2^-128 .. 1, and one for the rest (sampler.shadow.noise._draw_by_mass_histogram)
HISTOGRAM_ONE_KEY = 0x3FF0  # bits(1.0) >> 48


def sorted_quantile_draw(
    log_probs: Float[Tensor, "N K"],
    quantiles: Float[Tensor, " N"],
    temperature: float = 1.0,
    top_k: int | None = TOP_K,
) -> Int[Tensor, " N"]:
    """x = σ(j*), j* = min{j : Σ_{i<=j} w_σ(i) > c·W}, w = exp((log p − max log p)/T) in float64,
    W = Σ w, σ = the stable descending argsort of w (ties: lower id first).  A zero-weight category
    is never chosen; c·W beyond the last cumulative sum picks the last positive-weight category.

    Fast paths (same draws bit for bit, not an approximation), tried in turn on the rows still open:

    1. top-k: the categories strictly heavier than the top_k-th largest are exactly the first ones of
       σ, so a row whose target c·W falls within their cumulative mass is resolved from torch.topk (O(K)).
    2. mass histogram (CPU tensors): a histogram of each row's mass over 16 bins per octave of w
       finds the bin where the cumulative mass crosses c·W; that bin is a contiguous group of σ, sorted
       alone, and the crossing inside it is read with float64 error bounds that prove it is the full
       sort's (`_draw_by_mass_histogram`; O(K) plus a sort of one bin, and the rows within ~1e-11·W of a
       boundary stay open).
    3. the full stable sort (O(K log K)) for the rows left.

    top_k=None sorts every row."""
    weights, targets = _quantile_weights(log_probs, quantiles, temperature)
    draws = torch.empty(weights.shape[0], dtype=torch.long, device=weights.device)
    pending = torch.ones_like(draws, dtype=torch.bool)
    if top_k is not None and top_k < weights.shape[-1]:
        resolved, values = _draw_within_top_k(weights, targets, top_k)
        draws[resolved] = values
        pending = ~resolved
        if weights.device.type == "cpu" and sys.byteorder == "little" and bool(pending.any()):
            _resolve_by_mass_histogram(weights, targets, pending, draws)
    if bool(pending.any()):
        draws[pending] = _draw_by_full_sort(weights[pending], targets[pending])
    return draws


def tempered_weights(log_probs: Float[Tensor, "N K"], temperature: float, where: str = "") -> Float[Tensor, "N K"]:
    """w = exp((log p − max log p)/T) in float64 per row: one float64 buffer, updated in place (the same
    elementwise operations as the formula, so the same bits); the maximum is taken on the input dtype (exact
    under the widening) and carries any NaN of its row.  ValueError on NaN, +inf or a row of −inf."""
    best = log_probs.amax(dim=-1, keepdim=True)
    if bool(torch.isnan(best).any()):
        raise ValueError(f"log_probs contains NaN{where}")
    if bool((best == float("inf")).any()):
        raise ValueError(f"log_probs contains +inf{where}")
    if bool((best == float("-inf")).any()):
        raise ValueError(f"log_probs has a row with zero total probability{where}")
    weights = log_probs.to(torch.float64, copy=True)
    weights.sub_(best.to(torch.float64))
    if temperature != 1.0:  # x / 1.0 == x exactly
        weights.div_(temperature)
    return weights.exp_()


def _quantile_weights(
    log_probs: Float[Tensor, "N K"], quantiles: Float[Tensor, " N"], temperature: float,
) -> tuple[Float[Tensor, "N K"], Float[Tensor, " N"]]:
    """(w, c·W) of `tempered_weights`, W = Σ w."""
    weights = tempered_weights(log_probs, temperature, " at a position being revealed")
    return weights, quantiles.to(torch.float64) * weights.sum(dim=-1)


def _draw_within_top_k(weights: Tensor, targets: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """(resolved rows, their draws) for the rows whose target lies inside the mass of the categories
    strictly heavier than the top_k-th: those are σ's first entries, put in σ's order (by id, then
    stably by weight descending) so their float64 cumulative sums equal the full sort's."""
    top_weights, top_ids = torch.topk(weights, top_k, dim=-1)
    top_ids, by_id = torch.sort(top_ids, dim=-1)
    top_weights = torch.gather(top_weights, -1, by_id)
    top_weights, order = torch.sort(top_weights, dim=-1, descending=True, stable=True)
    top_ids = torch.gather(top_ids, -1, order)
    cdf = torch.cumsum(top_weights, dim=-1)
    strictly_above = top_weights > top_weights[:, -1:]
    usable_mass = torch.where(strictly_above, cdf, torch.zeros_like(cdf)).amax(dim=-1)
    resolved = targets < usable_mass
    rank = torch.searchsorted(cdf[resolved], targets[resolved].unsqueeze(-1), right=True)
    return resolved, torch.gather(top_ids[resolved], -1, rank).squeeze(-1)


def _resolve_by_mass_histogram(weights: Tensor, targets: Tensor, pending: Tensor, draws: Tensor) -> None:
    """_draw_by_mass_histogram on the pending rows, writing their draws and clearing them from `pending` in
    place; a minority of pending rows is copied out first, a majority is read in place (the copy costs more)."""
    if 2 * int(pending.sum()) <= pending.numel():
        rows = pending.nonzero().squeeze(-1)
        resolved, values = _draw_by_mass_histogram(weights[rows], targets[rows], torch.ones_like(rows, dtype=torch.bool))
        rows = rows[resolved]
    else:
        resolved, values = _draw_by_mass_histogram(weights, targets, pending)
        rows = resolved.nonzero().squeeze(-1)
    draws[rows] = values
    pending[rows] = False


def _draw_by_mass_histogram(
    weights: Float[Tensor, "N K"], targets: Float[Tensor, " N"], open_rows: Bool[Tensor, " N"],
) -> tuple[Bool[Tensor, " N"], Int[Tensor, " M"]]:
    """(resolved rows among open_rows, their draws) without sorting a row: the crossing is located by
    mass, then read in one small group of σ.

    Bin of a weight w ∈ [0, 1]: the top 16 bits of its IEEE double (exponent and 4 mantissa bits: 16 bins
    per octave), floored at the bits of 2^−128 (that bin also holds the zeros).  The bin does not
    decrease with w, so the bins heavier than b are a set of σ's first entries and bin b is the next
    group, which a stable descending sort in id order puts in σ's order.  Estimates E of the cumulative
    sums S at the group's boundaries (bin masses by bincount, their cumsum, then the group's own cumsum)
    and the full sort's sequential float64 sums F all lie within γ·W of S, γ ≤ (2K + bins + 8)·2⁻⁵³, in
    any summation order; a row is resolved only when c·W lies farther than δ = 4·(2K + bins + 8)·2⁻⁵³·W
    from E on both sides of its crossing, and then F ≤ c·W < F' at the same boundaries, so j* and σ(j*)
    are the full sort's.  Rows with c·W within about 10⁻¹¹·W of a boundary, or in the lowest bin, stay open."""
    rows, size = weights.shape
    bins, lowest = HISTOGRAM_BINS, HISTOGRAM_ONE_KEY - HISTOGRAM_BINS + 1
    offsets = torch.arange(rows, device=weights.device, dtype=torch.int32) * bins - lowest
    top_bits = weights.view(torch.int16)[..., 3::4]  # little-endian: bits(w) >> 48, w >= 0
    keys = top_bits.to(torch.int32).clamp_(lowest, HISTOGRAM_ONE_KEY).add_(offsets.unsqueeze(-1))  # row·bins + bin, lightest bin 0
    mass = torch.bincount(keys.view(-1), weights=weights.reshape(-1), minlength=rows * bins).view(rows, bins)
    cumulative = mass.flip(-1).cumsum(-1)  # heaviest bin first
    crossing = (cumulative <= targets.unsqueeze(-1)).sum(-1).clamp_(max=bins - 1)
    above = torch.where(crossing > 0, cumulative.gather(-1, (crossing - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    below = cumulative.gather(-1, crossing.unsqueeze(-1)).squeeze(-1)
    delta = 4 * (2 * size + bins + 8) * 2.0**-53 * cumulative[:, -1]
    usable = open_rows & (crossing < bins - 1) & (targets - above > delta) & (below - targets > delta)
    group_key = torch.where(usable, (bins - 1 - crossing).int() + offsets + lowest, -1)
    row, column = (keys == group_key.unsqueeze(-1)).nonzero(as_tuple=True)
    by_weight = torch.sort(weights[row, column], descending=True, stable=True).indices  # ties keep id order
    order = by_weight[torch.sort(row[by_weight], stable=True).indices]  # then by row, each in σ's order
    row, column = row[order], column[order]
    counts = torch.bincount(row, minlength=rows)
    starts = counts.cumsum(0) - counts
    group = torch.zeros(rows, max(int(counts.max()), 1), dtype=torch.float64, device=weights.device)
    group[row, torch.arange(row.numel(), device=weights.device) - starts[row]] = weights[row, column]
    estimates = above.unsqueeze(-1) + group.cumsum(-1)
    rank = (estimates <= targets.unsqueeze(-1)).sum(-1).clamp_(max=group.shape[1] - 1)
    after = estimates.gather(-1, rank.unsqueeze(-1)).squeeze(-1)
    before = torch.where(rank > 0, estimates.gather(-1, (rank - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), above)
    resolved = usable & (rank < counts) & (after - targets > delta) & (targets - before > delta)
    return resolved, column[(starts + rank)[resolved]]


def _draw_by_full_sort(weights: Tensor, targets: Tensor) -> Tensor:
    sorted_weights, order = torch.sort(weights, dim=-1, descending=True, stable=True)
    cdf = torch.cumsum(sorted_weights, dim=-1)
    rank = torch.searchsorted(cdf, targets.unsqueeze(-1), right=True).squeeze(-1)
    last_positive = (sorted_weights > 0).sum(dim=-1) - 1
    rank = torch.minimum(rank, last_positive)
    return torch.gather(order, -1, rank.unsqueeze(-1)).squeeze(-1)


def quantile_interval(
    log_probs: Float[Tensor, "N K"], tokens: Int[Tensor, " M"], temperature: float = 1.0,
) -> tuple[Float[Tensor, " N"], Float[Tensor, " N"]]:  # tokens: M = N, checked below with a ValueError
    """(low, width), float64: the quantiles c at which `sorted_quantile_draw(log_probs, c, temperature)` returns
    tokens[n] form the interval [low, low + width) (in units of the total mass; width = 0 for a zero-weight token).

    With w = exp((log p − max log p)/T), W = Σ w, σ the stable descending argsort of w (ties: lower id first)
    and S_j = Σ_{i<=j} w_σ(i) (float64 cumulative sums, as sorted_quantile_draw forms them), x = σ(j) is drawn
    iff S_{j−1} <= c·W < S_j, so low = S_{j−1}/W and width = w_x/W (exact up to float64 rounding of the
    boundaries, about 1e-16 of the mass)."""
    check_temperature(temperature)
    if tokens.shape != log_probs.shape[:1] or bool(((tokens < 0) | (tokens >= log_probs.shape[-1])).any()):
        raise ValueError(f"tokens must hold one id in [0, {log_probs.shape[-1]}) per row of log_probs, "
                         f"got shape {tuple(tokens.shape)}")
    weights = tempered_weights(log_probs, temperature)
    tokens = tokens.to(weights.device).unsqueeze(-1)
    total = weights.sum(dim=-1)
    sorted_weights, order = torch.sort(weights, dim=-1, descending=True, stable=True)
    rank = torch.argsort(order, dim=-1).gather(-1, tokens).squeeze(-1)
    cdf = torch.cumsum(sorted_weights, dim=-1)
    before = cdf.gather(-1, (rank - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    low = torch.where(rank > 0, before, torch.zeros_like(before)) / total
    return low, weights.gather(-1, tokens).squeeze(-1) / total


def _check_sampler_inputs(
    noise: Any, coupling: MaskedCoupling, vocab_size: int, fixed: Tensor | None, device: Any,
) -> None:
    """ValueErrors naming the argument, before any denoiser call."""
    if not isinstance(noise, ShadowNoise):
        raise ValueError(f"noise must be a ShadowNoise (see sample_shadow_noise), got {type(noise).__name__}")
    if noise.vocab_size != vocab_size:
        raise ValueError(f"noise was drawn for vocab_size={noise.vocab_size}, not vocab_size={vocab_size}")
    wanted = None if device is None else torch.device(device)
    if wanted is not None and (noise.device.type != wanted.type or (wanted.index is not None and noise.device.index != wanted.index)):
        raise ValueError(f"noise is on {noise.device} but device={device!r}; draw the noise on the sampling device")
    if bool(coupling.visible(noise.reveal, 1.0).any()):
        raise ValueError("noise.reveal shows tokens visible at t = 1 under this schedule; draw it with sample_shadow_noise "
                         "(conditioned on masked at t = 1) for the same schedule")
    if fixed is not None:
        if not isinstance(fixed, Tensor) or fixed.is_floating_point() or tuple(fixed.shape) != noise.shape:
            raise ValueError(f"fixed must be an integer tensor of the noise's shape {noise.shape}, got "
                             f"{tuple(getattr(fixed, 'shape', ()))}")
        bad = (fixed != coupling.mask_id) & ((fixed < 0) | (fixed >= vocab_size))
        if bool(bad.any()):
            raise ValueError(f"fixed must hold tokens in 0..{vocab_size - 1} or mask_id={coupling.mask_id}")


@torch.no_grad()
def noise_shared_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    *,
    num_steps: int,
    noise: ShadowNoise,
    mask_id: int,
    vocab_size: int,
    temperature: float = 1.0,
    fixed: Int[Tensor, "N L"] | None = None,
    device: Any = None,
    batch_size: int = 256,
) -> Int[Tensor, "N L"]:
    """Sequences (CPU int64, noise.shape) by N ancestral steps on t_i = i/N, every choice read from `noise`
    (module docstring).  `fixed` pins tokens (mask_id where free) as in `ancestral_sample`.  The
    denoiser runs on noise.device (`device`, when given, must equal it); one that declares
    `reads_shadow_noise = True` is also passed `noise=` the batch's ShadowNoise."""
    check_positive_int(num_steps, "num_steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(vocab_size, "vocab_size")
    temperature = check_temperature(temperature)
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be an int outside the real tokens 0..{vocab_size - 1}, got {mask_id!r}")
    method = noise.method if isinstance(noise, ShadowNoise) else "uniform"
    coupling = shadow_coupling(schedule, vocab_size, mask_id, method)
    _check_sampler_inputs(noise, coupling, vocab_size, fixed, device)
    grid = StepTimes(num_steps)  # constant memory at any step count
    num_samples, seq_len = noise.shape
    out = []
    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        z = torch.full((stop - start, seq_len), mask_id, dtype=torch.long, device=noise.device)
        if fixed is not None:
            z = fixed[start:stop].to(noise.device, torch.long).clone()
        out.append(_sample_batch(denoiser, coupling, grid, z, noise.rows(start, stop), temperature).cpu())
    return torch.cat(out)


def _sample_batch(
    denoiser: Denoiser, coupling: MaskedCoupling, grid: StepTimes, z: Tensor, noise: ShadowNoise, temperature: float,
) -> Tensor:
    """Steps t_i -> t_{i+1} of one batch (`shadow_step` on every row at the same times)."""
    for t, s in itertools.pairwise(grid):
        t_vec = torch.full((z.shape[0],), t, dtype=torch.float64, device=z.device)
        z, _, _ = shadow_step(denoiser, coupling, z, t_vec, torch.full_like(t_vec, s), noise, temperature)
    return z


def shadow_step(
    denoiser: Denoiser, coupling: MaskedCoupling, z: Int[Tensor, "B L"], t: Float[Tensor, " B"], s: Float[Tensor, " B"],
    noise: ShadowNoise, temperature: float = 1.0,
) -> tuple[Int[Tensor, "B L"], Any, Any]:
    """One noise-shared step t -> s per row (times per sequence, float64): reveal = masked at t and
    visible at s (from noise.reveal), value = sorted_quantile_draw of the denoiser at (z_t, t) at quantile
    noise.category.  Returns (z_s, reveal [B, L] bool, the denoiser's log-probs at (z_t, t) or None when
    nothing is revealed: then no denoiser call is made and no noise is consumed)."""
    reveal = (z == coupling.mask_id) & coupling.visible(noise.reveal, s)
    if not bool(reveal.any()):
        return z, reveal, None
    log_probs = denoiser(z, t.float(), noise=noise) if reads_shadow_noise(denoiser) else denoiser(z, t.float())
    rows = log_probs.detach().to(z.device)[reveal]
    z = z.clone()
    z[reveal] = sorted_quantile_draw(rows, noise.category[reveal], temperature).to(z.dtype)
    return z, reveal, log_probs
