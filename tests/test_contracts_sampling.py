"""Contracts of the ancestral sampler over a denoiser callable, checked with a recording toy denoiser.

- Step i of N goes from t = grid[i] to s = grid[i+1] (grid = 1, (N−1)/N, ..., 0) and queries the
  denoiser at (z_t, t): the current state and the step's START time.  Planted bug caught: the
  denoiser queried at s (invisible to a time-independent denoiser, hence the time-conditioned toy).
- `final_greedy` takes the argmax in the LAST step only; earlier steps draw.  Planted bug caught:
  greedy applied at the first step instead (invisible with one step, the only case tested before).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Library names in one place (re-point here when the modules move).
from sampler.sampling import ancestral_sample, ancestral_step
from theory import LogLinearSchedule

K, L = 7, 10
MASK = K


class RecordingDenoiser:
    """Factorised toy denoiser p(x0_l | z_t, t) = law(t) at every masked position (SUBS copy at
    visible ones) that records every call's inputs (z, t)."""

    def __init__(self, law: Callable[[float], torch.Tensor]) -> None:
        self.law = law
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((z.clone(), t.clone()))
        rows = torch.stack([self.law(float(time)) for time in t]).log().float()  # (B, K)
        out = rows[:, None, :].expand(*z.shape, K).clone()
        visible = z != MASK
        copied = torch.full_like(out, float("-inf"))
        copied.scatter_(-1, torch.where(visible, z, 0).unsqueeze(-1), 0.0)
        return torch.where(visible.unsqueeze(-1), copied, out)

    def reveal_step(self) -> torch.Tensor:
        """For every position, the index of the call after which it was revealed (masked at calls
        0..i, visible afterwards): the number of calls that saw it masked, minus one."""
        masked = torch.stack([z == MASK for z, _ in self.calls])
        return masked.sum(0) - 1


def time_token(num_steps: int) -> Callable[[float], torch.Tensor]:
    """law(t) = a point mass on token round(t·N) mod K: the token tells which time the denoiser saw."""

    def law(t: float) -> torch.Tensor:
        probs = torch.zeros(K, dtype=torch.float64)
        probs[round(t * num_steps) % K] = 1.0
        return probs

    return law


def test_sampler_queries_the_denoiser_at_each_steps_start_time() -> None:
    num_steps = 4
    denoiser = RecordingDenoiser(time_token(num_steps))
    out = ancestral_sample(denoiser, LogLinearSchedule(), num_steps=num_steps, num_samples=50, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(0))
    times = [t.tolist() for _, t in denoiser.calls]
    assert times == [[1.0] * 50, [0.75] * 50, [0.5] * 50, [0.25] * 50]
    # each call sees the current state: step i's input is step i−1's output (tokens only get revealed)
    for (before, _), (after, _) in zip(denoiser.calls, denoiser.calls[1:]):
        revealed_before = before != MASK
        assert torch.equal(after[revealed_before], before[revealed_before])
        assert bool(((after != MASK) & ~revealed_before).any())
    # every token carries the time of the step that revealed it: token N − i for step i
    step = denoiser.reveal_step()
    assert set(step.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(out, num_steps - step)


def test_single_ancestral_step_queries_the_denoiser_at_t() -> None:
    denoiser = RecordingDenoiser(time_token(4))
    z = torch.full((3, L), MASK)
    z_s = ancestral_step(denoiser, z, 0.75, 0.5, LogLinearSchedule(), MASK, torch.Generator().manual_seed(0))
    assert len(denoiser.calls) == 1 and denoiser.calls[0][1].tolist() == [0.75] * 3
    assert bool((z_s != MASK).any()) and (z_s[z_s != MASK] == 3).all()


def test_final_greedy_takes_the_argmax_in_the_last_step_only() -> None:
    """Tokens revealed in the last of 4 steps are all the mode (token 1); the ~1 500 revealed earlier
    are draws, of which about half (p = 0.5) are the mode.  The 0.8 bound is > 20 binomial SEs away:
    false-fail rate < 1e-80 (and the run is seeded)."""
    probs = torch.tensor([0.1, 0.5, 0.1, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    denoiser = RecordingDenoiser(lambda t: probs)
    out = ancestral_sample(denoiser, LogLinearSchedule(), num_steps=4, num_samples=200, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(0),
                           final_greedy=True)
    step = denoiser.reveal_step()
    last, earlier = step == 3, step < 3
    assert int(last.sum()) > 100 and int(earlier.sum()) > 1000
    assert (out[last] == 1).all()
    share_of_mode = float((out[earlier] == 1).double().mean())
    assert 0.2 < share_of_mode < 0.8
    first_step = step == 0
    assert int(first_step.sum()) > 100 and float((out[first_step] == 1).double().mean()) < 0.8
