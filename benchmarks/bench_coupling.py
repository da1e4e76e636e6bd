"""Benchmark: masked coupling by the Gaussian definition vs the O(1) threshold draw (and the uniform draw).

Measured side by side in one run on 16 × 1024 tokens at K = 50 258 (GPT-2 vocabulary):

- sample_noise + mask at one fixed t (ν(t) cached after the first call),
- mask only, reusing the noise, at a new scalar t each repeat (ν(t) computed: one inversion),
- mask only, reusing the noise, at a new per-sequence t of shape (16,) each repeat (16 inversions),
- the ν(t) inversion alone (theory's CalibratedSchedule.nu), to separate it from the masking,
- noise bytes per token, and the threshold method at K = 10^7 (time and memory do not grow with K).

The Gaussian method materialises ε ∈ R^K per token, so it runs on a slice of tokens (default 128) and its
time is scaled per token; its noise is float32 (the cheaper, fairer baseline).  Reported figures are
medians over repeats; the ratio is gaussian time per token / threshold time per token.

    python benchmarks/bench_coupling.py [--repeats 30] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from tqdm import tqdm

from duality import MaskedCoupling
from theory import LogLinearSchedule

GPT2_VOCAB = 50_258


def median_seconds(fn: Callable[[int], object], repeats: int, device: torch.device, label: str) -> float:
    """Median wall time of fn(i) over `repeats` calls after one warm-up call (synchronising CUDA)."""
    fn(-1)
    times = []
    for i in tqdm(range(repeats), desc=label, leave=False):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh_time(i: int, offset: float = 0.0) -> float:
    """A distinct time in (0.05, 0.95) for every repeat (defeats the ν cache)."""
    return 0.05 + ((i + 2) * 0.6180339887498949 + offset) % 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=GPT2_VOCAB)
    parser.add_argument("--gaussian-tokens", type=int, default=128, help="token slice for the O(K) Gaussian method")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--large-vocab", type=int, default=10**7)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    K, n_tokens = args.vocab_size, args.batch * args.length
    schedule = LogLinearSchedule()
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randint(0, K, (args.batch, args.length), device=device, generator=generator)
    x0_slice = x0.reshape(-1)[: args.gaussian_tokens].reshape(1, -1)
    t_fixed = 0.5

    couplings = {
        method: MaskedCoupling(schedule, K, K, method=method, noise_dtype=torch.float32)
        for method in ("gaussian", "threshold", "uniform")
    }
    rows: list[tuple[str, str, int, float]] = []  # (method, what, tokens, seconds)

    # --- sample_noise + mask at a fixed t
    for method, coupling in couplings.items():
        tokens = x0_slice if method == "gaussian" else x0

        def draw_and_mask(i: int, coupling: MaskedCoupling = coupling, tokens: torch.Tensor = tokens) -> object:
            noise = coupling.sample_noise(tokens, generator)
            return coupling.mask(tokens, noise, t_fixed)

        rows.append((method, "sample_noise + mask (fixed t)", tokens.numel(), median_seconds(draw_and_mask, args.repeats, device, method)))

    # --- mask only at a new scalar t / a new per-sequence t, reusing noise
    for method in ("threshold", "uniform"):
        coupling = couplings[method]
        noise = coupling.sample_noise(x0, generator)

        def mask_new_scalar(i: int, coupling: MaskedCoupling = coupling, noise: torch.Tensor = noise) -> object:
            return coupling.mask(x0, noise, fresh_time(i, 0.1 if i < 0 else 0.0))

        def mask_new_per_sequence(i: int, coupling: MaskedCoupling = coupling, noise: torch.Tensor = noise) -> object:
            t = torch.tensor([fresh_time(i, 0.01 * b) for b in range(args.batch)], dtype=torch.float64, device=device)
            return coupling.mask(x0, noise, t)

        def mask_cached(i: int, coupling: MaskedCoupling = coupling, noise: torch.Tensor = noise) -> object:
            return coupling.mask(x0, noise, t_fixed)

        rows.append((method, "mask only (cached t)", n_tokens, median_seconds(mask_cached, args.repeats, device, method)))
        rows.append((method, "mask only (new scalar t)", n_tokens, median_seconds(mask_new_scalar, max(5, args.repeats // 3), device, method)))
        rows.append((method, "mask only (new per-seq t)", n_tokens, median_seconds(mask_new_per_sequence, max(5, args.repeats // 3), device, method)))

    calibrated = couplings["threshold"].calibrated
    nu_scalar = median_seconds(lambda i: calibrated.nu(fresh_time(i, 0.3)), max(5, args.repeats // 3), device, "nu")

    # --- the threshold method does not grow with K
    big = MaskedCoupling(schedule, args.large_vocab, args.large_vocab, method="threshold")
    x0_big = torch.randint(0, args.large_vocab, (args.batch, args.length), device=device, generator=generator)

    def draw_and_mask_big(i: int) -> object:
        return big.mask(x0_big, big.sample_noise(x0_big, generator), t_fixed)

    rows.append(("threshold K=1e7" if args.large_vocab == 10**7 else f"threshold K={args.large_vocab}", "sample_noise + mask (fixed t)", n_tokens,
                 median_seconds(draw_and_mask_big, args.repeats, device, "threshold big K")))

    print(f"device={device} threads={torch.get_num_threads()} K={K} tokens={args.batch}x{args.length} "
          f"(gaussian slice {x0_slice.numel()} tokens, float32 noise) repeats={args.repeats} (medians)")
    print(f"{'method':<18} {'operation':<32} {'tokens':>7} {'median s':>11} {'ns/token':>10} {'tokens/s':>12}")
    for method, what, tokens, seconds in rows:
        print(f"{method:<18} {what:<32} {tokens:>7} {seconds:>11.3e} {1e9 * seconds / tokens:>10.2f} {tokens / seconds:>12.3e}")
    print(f"calibrated.nu(t) for one new scalar t: {nu_scalar:.3e} s")
    bytes_per_token = {m: (K * 4 if m == "gaussian" else 8) for m in couplings}
    print("noise bytes per token: " + ", ".join(f"{m}={b}" for m, b in bytes_per_token.items()))

    per_token = {(m, w): s / n for m, w, n, s in rows}
    gaussian = per_token[("gaussian", "sample_noise + mask (fixed t)")]
    threshold = per_token[("threshold", "sample_noise + mask (fixed t)")]
    ratio = gaussian / threshold
    print(f"RATIO gaussian/threshold time per token (sample_noise + mask, fixed t): {ratio:.3e} "
          f"(target >= 1e3: {'met' if ratio >= 1e3 else 'NOT met'})")
    rate = 1.0 / threshold
    print(f"threshold tokens/s (sample_noise + mask, fixed t): {rate:.3e} (target >= 1e7: {'met' if rate >= 1e7 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
