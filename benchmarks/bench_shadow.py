"""Benchmark: the noise-shared (shadow) sampler against the ordinary ancestral sampler.

1. Precision with the embedded HMM source's exact denoiser (sampler.data): NLL per token of the
   samples under the true source, mean ± SE over `--num` sequences, for each step count, noise-shared
   vs ancestral (independent draws, so the difference's SE is sqrt(SE₁² + SE₂²)).  Equal in law, so
   the difference must be within noise.
2. Cost per token of the category draw at K = 50 257: the sorted-quantile draw (stable descending sort,
   float64 cumulative sums, search) vs the ordinary inverse-CDF draw of the ancestral sampler
   (duality's float64 exp/cumsum/search), on the same float32 log-probabilities (log_softmax of
   scale · N(0, 1) logits, for each `--logit-scales`), median of `--repeats` runs, with the exact top-k
   path (default) and with a full sort of every row, and for scale the output head of a
   d_model = 768 model on the same tokens.

    python benchmarks/bench_shadow.py [--num 2048] [--seq-len 32] [--steps 16 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from bench_coupling import median_seconds  # this script's folder is on sys.path
from duality.forward import _sample_categories
from sampler.data import HiddenMarkovSource, sample_quality
from sampler.sampling import ancestral_sample
from sampler.shadow import noise_shared_sample, sample_shadow_noise, sorted_quantile_draw
from theory import LogLinearSchedule

GPT2_VOCAB = 50_257


def precision_rows(num: int, seq_len: int, steps: list[int], method: str, seed: int) -> None:
    source = HiddenMarkovSource(seed=0, seq_len=seq_len)
    vocab_size = source.vocab_size
    denoiser = source.denoiser(mask_id=vocab_size)
    schedule = LogLinearSchedule()
    rate = source.entropy_rate(seq_len)
    print(f"HMM source V={vocab_size}, L={seq_len}, entropy rate {rate[0]:.3f} ± {rate[1]:.3f}; {num} samples per row, "
          f"exact denoiser, log-linear schedule, reveal noise '{method}'")
    print(f"{'steps':>5}  {'noise-shared':>16}  {'ancestral':>16}  {'difference':>16}  {'seconds (ns / anc)':>18}")
    for num_steps in steps:
        start = time.perf_counter()
        noise = sample_shadow_noise(num, seq_len, schedule, vocab_size, vocab_size, torch.Generator().manual_seed(seed), method)
        shadow = noise_shared_sample(denoiser, schedule, num_steps, noise, vocab_size, vocab_size, batch_size=512)
        shadow_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ancestral = ancestral_sample(denoiser, schedule, num_steps, num, seq_len, vocab_size, vocab_size,
                                     torch.Generator().manual_seed(seed + 1), batch_size=512)
        ancestral_seconds = time.perf_counter() - start
        a = sample_quality(shadow, source, entropy_rate=rate)
        b = sample_quality(ancestral, source, entropy_rate=rate)
        diff, diff_se = a["nll_per_token"] - b["nll_per_token"], math.hypot(a["nll_se"], b["nll_se"])
        print(f"{num_steps:>5}  {a['nll_per_token']:>8.3f} ± {a['nll_se']:.3f}  {b['nll_per_token']:>8.3f} ± {b['nll_se']:.3f}  "
              f"{diff:>+8.3f} ± {diff_se:.3f}  {shadow_seconds:>8.1f} / {ancestral_seconds:.1f}")


def draw_cost(tokens: int, vocab_size: int, repeats: int, seed: int, logit_scales: list[float]) -> None:
    """Per-token cost of the draws on log_softmax(scale · N(0, 1)) rows; the share of rows that the
    exact top-k path resolves (target within the top-64 mass) sets how often the full sort runs."""
    from sampler.shadow import TOP_K, _draw_within_top_k

    generator = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")
    hidden = torch.randn(tokens, 768, generator=generator)
    head = torch.randn(vocab_size, 768, generator=generator) / 768**0.5
    output_head = median_seconds(lambda i: hidden @ head.T, repeats, cpu, "output head")
    per_token = lambda seconds: 1e6 * seconds / tokens  # noqa: E731
    print(f"\ncategory draw at K={vocab_size}, {tokens} tokens, median of {repeats}, {torch.get_num_threads()} thread(s); "
          f"output head 768 x K (float32 matmul) {per_token(output_head):.1f} µs/token")
    for scale in logit_scales:
        logits = scale * torch.randn(tokens, vocab_size, generator=generator)
        log_probs = torch.log_softmax(logits, dim=-1)  # float32, as a model returns
        quantiles = torch.rand(tokens, dtype=torch.float64, generator=generator)
        weights = torch.exp(log_probs.double() - log_probs.double().amax(-1, keepdim=True))
        resolved, _ = _draw_within_top_k(weights, quantiles * weights.sum(-1), TOP_K)
        plain = median_seconds(lambda i: _sample_categories(log_probs.double(), quantiles, 1.0, True), repeats, cpu, "ordinary draw")
        fast = median_seconds(lambda i: sorted_quantile_draw(log_probs, quantiles), repeats, cpu, "top-k path")
        full = median_seconds(lambda i: sorted_quantile_draw(log_probs, quantiles, top_k=None), repeats, cpu, "full sort")
        print(f"  logits {scale} x N(0,1): rows resolved in the top {TOP_K}: {float(resolved.double().mean()):.2f}")
        print(f"    inverse-CDF draw (ancestral)               {per_token(plain):9.1f} µs/token")
        print(f"    sorted-quantile draw, top-k path (default)  {per_token(fast):9.1f} µs/token  "
              f"ratio {fast / plain:.2f} to the ordinary draw, {fast / output_head:.2f} to the output head")
        print(f"    sorted-quantile draw, full sort             {per_token(full):9.1f} µs/token  "
              f"ratio {full / plain:.2f} to the ordinary draw, {full / output_head:.2f} to the output head")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 4])
    parser.add_argument("--method", choices=["uniform", "threshold"], default="uniform")
    parser.add_argument("--draw-tokens", type=int, default=256)
    parser.add_argument("--logit-scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision_rows(args.num, args.seq_len, args.steps, args.method, args.seed)
    draw_cost(args.draw_tokens, GPT2_VOCAB, args.repeats, args.seed, args.logit_scales)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
