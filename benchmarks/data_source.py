"""Figures of the embedded exact source, measured side by side in one run.

    python benchmarks/data_source.py [--num 256] [--repeats 3] [--oracle-steps 64 16 8 4 2 1]

Prints: the entropy rate ± SE (Monte Carlo over exact log-probs), sampling and exact
log-prob throughput (median of repeats), and the cost of few-step decoding by itself:
ancestral sampling with the source's exact denoiser (the ideal teacher) at several step
counts, all with one sampler seed (paired), NLL under the true source and its excess over
the entropy rate.  Single CPU thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sampler.data import get_source, paired_difference, sample_quality
from sampler.sampling import ancestral_sample
from theory import LogLinearSchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=256, help="samples per step count (oracle)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--oracle-steps", type=int, nargs="+", default=[64, 16, 8, 4, 2, 1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    source = get_source("exact", seed=args.seed)
    L = source.default_seq_len
    start = time.perf_counter()
    rate, rate_se = source.entropy_rate(L, num_samples=16384)
    print(f"source {source.name}, L={L}")
    print(f"entropy rate: {rate:.4f} ± {rate_se:.4f} nats/token (n=16384 sequences; {time.perf_counter() - start:.1f} s)")

    sample_times, logprob_times = [], []
    for r in range(args.repeats):
        generator = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        x = source.sample_batch(4096, L, generator)
        t1 = time.perf_counter()
        source.log_prob(x)
        t2 = time.perf_counter()
        sample_times.append(t1 - t0)
        logprob_times.append(t2 - t1)
    tokens = 4096 * L
    print(f"sampling: {tokens / statistics.median(sample_times) / 1e6:.2f} M tokens/s; "
          f"exact log_prob: {tokens / statistics.median(logprob_times) / 1e6:.2f} M tokens/s "
          f"(median of {args.repeats}, batches of 4096 x {L})")

    denoiser = source.denoiser()
    steps_sorted = sorted(set(args.oracle_steps), reverse=True)
    reference = None
    print(f"\nexact denoiser, loglinear schedule, N={args.num}, one sampler seed (paired):")
    print(f"{'steps':>6} {'NLL':>8} {'±':>6} {'excess':>8} {'Δ vs ' + str(steps_sorted[0]):>10} {'±':>6} {'entropy':>8} {'s':>6}")
    for steps in steps_sorted:
        t0 = time.perf_counter()
        samples = ancestral_sample(denoiser, LogLinearSchedule(), num_steps=steps, num_samples=args.num, seq_len=L, mask_id=source.vocab_size,
                                   vocab_size=source.vocab_size, generator=torch.Generator().manual_seed(args.seed), cached=True)
        seconds = time.perf_counter() - t0
        q = sample_quality(samples, source, entropy_rate=(rate, rate_se))
        if reference is None:
            reference = q["per_sequence_nll"]
            delta = f"{'—':>10} {'':>6}"
        else:
            mean, se = paired_difference(q["per_sequence_nll"], reference)
            delta = f"{mean:>10.4f} {se:>6.4f}"
        print(f"{steps:>6} {q['nll_per_token']:>8.4f} {q['nll_se']:>6.4f} {q['excess']:>8.4f} {delta} "
              f"{q['unigram_entropy']:>8.4f} {seconds:>6.1f}")


if __name__ == "__main__":
    main()
