"""What a sample costs: network-forward equivalents and wall time per sample on one CPU thread.

- Forward equivalents per sample = (Σ over denoiser calls of the rows passed × the passes one call makes) /
  samples drawn, counted by `CountingDenoiser` around the sampler's own denoiser while it draws.  The ancestral
  sampler with its cache calls the denoiser only on sequences that changed, so this is its number of distinct
  denoiser calls per sample.  A plain denoiser makes 1 pass per call.  A shadow student makes, per call
  (`passes_per_call`, read off `sampler.shadow.student.ShadowStudent.forward`): the base trunk (1), its noise head
  (1: the causal head, or the input head's noise MLP), and with drafts and the input head one more trunk pass for
  the draft marginals (1; the causal head reads its drafts off the base pass it already made).
- Wall time per sample: the median over `repeats` full draws of seconds / samples, with torch on one thread
  (restored afterwards), measured in the same process as the other rows so rows compare.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from theory.checks import check_int


def passes_per_call(denoiser: Any) -> int:
    """Network-forward equivalents of one call on one row: 1 for a denoiser; for a shadow student (its `shadow`
    config) base trunk + noise head + (input head with drafts: a second trunk pass for the draft marginals)."""
    inner = getattr(denoiser, "student", denoiser)  # ArgmaxShadowDenoiser wraps the student
    shadow = getattr(inner, "shadow", None)
    if not getattr(inner, "reads_shadow_noise", False) or shadow is None:
        return 1
    draft_pass = 1 if (shadow.head != "causal" and shadow.draft) else 0
    return 1 + 1 + draft_pass


class CountingDenoiser:
    """A denoiser (or shadow student) that counts rows × passes over its calls; every other attribute is the
    wrapped one's (so samplers, capability checks and wrappers see the same object)."""

    def __init__(self, denoiser: Any) -> None:
        if not callable(denoiser):
            raise ValueError(f"denoiser must be callable, got {type(denoiser).__name__}")
        self.__dict__["wrapped"] = denoiser
        self.__dict__["passes"] = passes_per_call(denoiser)
        self.__dict__["forwards"] = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["wrapped"], name)

    def __call__(self, z: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        self.__dict__["forwards"] += int(z.shape[0]) * self.__dict__["passes"]
        return self.__dict__["wrapped"](z, t, **kwargs)


@contextlib.contextmanager
def counted(denoiser: Any) -> Iterator[tuple[Any, Callable[[], int]]]:
    """(the denoiser to draw with, a function returning the forward equivalents so far): an nn.Module keeps its own
    identity (samplers type-check it) and is counted by a forward pre-hook on its top-level calls, removed on exit;
    any other callable is wrapped in a `CountingDenoiser`."""
    if isinstance(denoiser, nn.Module):
        passes, total = passes_per_call(denoiser), [0]

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            total[0] += int(args[0].shape[0]) * passes
        handle = denoiser.register_forward_pre_hook(hook)
        try:
            yield denoiser, lambda: total[0]
        finally:
            handle.remove()
        return
    counter = CountingDenoiser(denoiser)
    yield counter, lambda: counter.forwards


def sampler_cost(draw: Callable[[Any], Tensor], denoiser: Any, *, repeats: int = 3,
                 threads: int = 1) -> dict[str, Any]:
    """Cost of `draw(denoiser) -> samples [N, L]`: forward equivalents per sample (counted on the first draw) and
    the median over `repeats` draws of the wall time per sample with torch.set_num_threads(threads)."""
    check_int(repeats, "repeats", 1)
    check_int(threads, "threads", 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds, forwards, num = [], None, None
        for _ in range(repeats):
            with counted(denoiser) as (counting, count):
                start = time.perf_counter()
                samples = draw(counting)
                elapsed = time.perf_counter() - start
            num = int(samples.shape[0])
            forwards = count() if forwards is None else forwards
            seconds.append(elapsed / num)
    finally:
        torch.set_num_threads(previous)
    return {"forward_equivalents": forwards / num, "wall_s_per_sample": statistics.median(seconds),
            "wall_runs": len(seconds), "threads": threads, "samples_per_run": num,
            "passes_per_call": passes_per_call(denoiser)}


__all__ = ["CountingDenoiser", "counted", "passes_per_call", "sampler_cost"]
