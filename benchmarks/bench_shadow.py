"""Benchmark: the noise-shared (shadow) sampler against the ordinary ancestral sampler.

1. Precision with the embedded HMM source's exact denoiser (sampler.data): NLL per token of the
   samples under the true source, mean ± SE over `--num` sequences, for each step count, noise-shared
   vs ancestral (independent draws, so the difference's SE is sqrt(SE₁² + SE₂²)).  Equal in law, so
   the difference must be within noise.
2. Cost per token of the category draw at K = 50 257: the sorted-quantile draw (default: top-k, mass
   histogram, full sort for the rest; "before": top-k then full sort, the previous default; and a full
   sort of every row) vs the ordinary inverse-CDF draw of the ancestral sampler (duality's float64
   exp/cumsum/search), on the same float32 log-probabilities of each `--draw-kinds` (flat and peaked
   normal logits, Zipf at several temperatures, a peaked Zipf), median of `--repeats` runs, beside the
   output heads (float32 matmul) of a d_model = 768 and a d_model = 64 (tiny) model on the same tokens.

    python benchmarks/bench_shadow.py [--num 2048] [--seq-len 32] [--steps 16 4] [--threads 1] [--draw-only]
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
from sampler.shadow.noise import noise_shared_sample, sample_shadow_noise, sorted_quantile_draw
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
        shadow = noise_shared_sample(denoiser, schedule, num_steps=num_steps, noise=noise, mask_id=vocab_size, vocab_size=vocab_size, batch_size=512)
        shadow_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ancestral = ancestral_sample(denoiser, schedule, num_steps=num_steps, num_samples=num, seq_len=seq_len, mask_id=vocab_size, vocab_size=vocab_size,
                                     generator=torch.Generator().manual_seed(seed + 1), batch_size=512)
        ancestral_seconds = time.perf_counter() - start
        a = sample_quality(shadow, source, entropy_rate=rate)
        b = sample_quality(ancestral, source, entropy_rate=rate)
        diff, diff_se = a["nll_per_token"] - b["nll_per_token"], math.hypot(a["nll_se"], b["nll_se"])
        print(f"{num_steps:>5}  {a['nll_per_token']:>8.3f} ± {a['nll_se']:.3f}  {b['nll_per_token']:>8.3f} ± {b['nll_se']:.3f}  "
              f"{diff:>+8.3f} ± {diff_se:.3f}  {shadow_seconds:>8.1f} / {ancestral_seconds:.1f}")


def test_logits(kind: str, tokens: int, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Logits of one row kind: "normal:S" = S·N(0, 1); "zipf:A" = −A·log(rank) over a random permutation
    (p ∝ rank^−A, i.e. Zipf(1) at temperature 1/A); "peaked:A" = zipf:A with the top category raised by 8 nats."""
    name, value = kind.split(":")
    if name == "normal":
        return float(value) * torch.randn(tokens, vocab_size, generator=generator)
    ranks = torch.argsort(torch.rand(tokens, vocab_size, generator=generator), dim=-1).float()
    logits = -float(value) * torch.log1p(ranks)
    if name == "peaked":
        logits = logits + 8.0 * (ranks == 0)
    elif name != "zipf":
        raise ValueError(f"--draw-kinds: unknown kind {kind!r} (normal:S, zipf:A, peaked:A)")
    return logits


def draw_cost(tokens: int, vocab_size: int, repeats: int, seed: int, kinds: list[str]) -> None:
    """Per-token cost of the draws on float32 log_softmax rows of each kind, against the output heads of
    a d_model = 768 and a d_model = 64 (tiny preset) model; the shares of rows each exact path resolves."""
    from sampler.shadow.noise import TOP_K, _draw_by_full_sort, _draw_by_mass_histogram, _draw_within_top_k, _quantile_weights

    generator = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")
    layers = {width: (torch.randn(tokens, width, generator=generator), torch.randn(vocab_size, width, generator=generator) / width**0.5)
              for width in (768, 64)}

    def head_seconds(width: int) -> float:  # measured again on every row: the shared machine's speed drifts
        hidden, weight = layers[width]
        return median_seconds(lambda i: hidden @ weight.T, repeats, cpu, f"head {width}")

    per_token = lambda seconds: 1e6 * seconds / tokens  # noqa: E731

    def before(log_probs: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:  # the top-k + full sort draw (the previous default)
        weights, targets = _quantile_weights(log_probs, quantiles, 1.0)
        resolved, values = _draw_within_top_k(weights, targets, TOP_K)
        draws = torch.empty_like(resolved, dtype=torch.long)
        draws[resolved] = values
        draws[~resolved] = _draw_by_full_sort(weights[~resolved], targets[~resolved])
        return draws

    print(f"\ncategory draw at K={vocab_size}, {tokens} tokens, median of {repeats}, {torch.get_num_threads()} thread(s); "
          f"µs/token; output heads = float32 matmul d x K (d = 768, and 64 as in the tiny model), measured on each row")
    print(f"{'logits':>11} {'top-k/hist/sort rows':>21} {'head768':>8} {'head64':>7} {'inv. CDF':>8} {'draw':>7} {'/head768':>8} "
          f"{'/head64':>7} {'before':>7} {'/head768':>8} {'full sort':>9} {'/head768':>8}")
    for kind in kinds:
        log_probs = torch.log_softmax(test_logits(kind, tokens, vocab_size, generator), dim=-1)  # float32, as a model returns
        quantiles = torch.rand(tokens, dtype=torch.float64, generator=generator)
        weights, targets = _quantile_weights(log_probs, quantiles, 1.0)
        in_top_k, _ = _draw_within_top_k(weights, targets, TOP_K)
        by_mass, _ = _draw_by_mass_histogram(weights, targets, ~in_top_k)
        shares = f"{in_top_k.double().mean():.2f}/{by_mass.double().mean():.2f}/{1 - (in_top_k | by_mass).double().mean():.2f}"
        plain = median_seconds(lambda i: _sample_categories(log_probs.double(), quantiles, 1.0, True), repeats, cpu, "ordinary draw")
        fast = median_seconds(lambda i: sorted_quantile_draw(log_probs, quantiles), repeats, cpu, "default")
        old = median_seconds(lambda i: before(log_probs, quantiles), repeats, cpu, "before")
        full = median_seconds(lambda i: sorted_quantile_draw(log_probs, quantiles, top_k=None), repeats, cpu, "full sort")
        big, small = head_seconds(768), head_seconds(64)
        print(f"{kind:>11} {shares:>21} {per_token(big):>8.0f} {per_token(small):>7.0f} {per_token(plain):>8.0f} {per_token(fast):>7.0f} "
              f"{fast / big:>8.2f} {fast / small:>7.2f} {per_token(old):>7.0f} {old / big:>8.2f} {per_token(full):>9.0f} {full / big:>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2048)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 4])
    parser.add_argument("--method", choices=["uniform", "threshold"], default="uniform")
    parser.add_argument("--draw-tokens", type=int, default=256)
    parser.add_argument("--draw-kinds", nargs="+", default=["normal:1", "normal:3", "zipf:0.8", "zipf:1", "zipf:1.2", "peaked:1"],
                        help="row kinds of the draw-cost table: normal:S (S·N(0,1) logits), zipf:A, peaked:A")
    parser.add_argument("--draw-only", action="store_true", help="only the draw-cost table (skip the precision rows)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.draw_only:
        precision_rows(args.num, args.seq_len, args.steps, args.method, args.seed)
    draw_cost(args.draw_tokens, GPT2_VOCAB, args.repeats, args.seed, args.draw_kinds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
