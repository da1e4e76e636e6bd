"""Converged recall, precision and cost of the floor on the exact source: the exact denoiser of
get_source("exact", seed=0, seq_len=L) sampled ancestrally at T in --temperatures and by the confidence-ordered
sampler (max_prob, exact recall), at each step count.  Recall: plain importance sampling over reveal patterns
(sampler.quality.two_axis.recall_with_diagnostic) from k = 1 up to --max-k, stopping once the remaining change
(|change k/4 -> k| + 2 SE) is below --tolerance; precision: E_q[−log p]/L of --num samples; cost: forward
equivalents and one-thread wall time per sample (median of 3).  One table row per sampler and step count.

    python benchmarks/converged_floor.py --steps 4 8 --max-k 1024 --tolerance 0.005
"""

from __future__ import annotations

import argparse

import torch

from sampler.confidence import confidence_recall_per_sequence, confidence_sample
from sampler.cost import sampler_cost
from sampler.data import get_source, paired_difference, sample_quality
from sampler.quality.two_axis import recall_with_diagnostic
from sampler.sampling import ancestral_sample
from theory import LogLinearSchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.9, 0.95, 1.0])
    parser.add_argument("--heldout", type=int, default=32)
    parser.add_argument("--num", type=int, default=512)
    parser.add_argument("--max-k", type=int, default=1024)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = get_source("exact", seed=0, seq_len=args.seq_len)
    oracle, schedule, length = source.denoiser(dtype=torch.float64), LogLinearSchedule(), args.seq_len
    heldout = source.sample_batch(args.heldout, length, torch.Generator().manual_seed(10_007 + args.seed))
    true_nll = float((-source.log_prob(heldout) / length).mean())
    print(f"exact source L={length}, {args.heldout} held-out sequences (true −log p/L {true_nll:.4f}), {args.num} samples")
    print(f"{'sampler':<18} {'steps':>5} {'precision':>15} {'recall':>15} {'k':>5} {'change k/4->k':>16} {'remaining':>9} "
          f"{'fwd':>5} {'ms':>7}")
    common = dict(num_samples=args.num, seq_len=length, mask_id=oracle.mask_id, vocab_size=source.vocab_size)
    for steps in args.steps:
        for temperature in args.temperatures:
            def draw(d, temperature=temperature):
                return ancestral_sample(d, schedule, num_steps=steps, temperature=temperature, cached=True,
                                        generator=torch.Generator().manual_seed(args.seed), **common)
            report = recall_with_diagnostic(oracle, schedule, heldout, steps=steps, temperature=temperature,
                                            max_k=args.max_k, tolerance=args.tolerance, seed=args.seed * 7_919 + steps)
            _row(f"floor T={temperature:g}", steps, draw, oracle, source, report["recall"], report["recall_se"],
                 report["k"], f"{report['change']:+.4f}±{report['change_se']:.4f}", f"{report['remaining']:.4f}")

        def confident(d):
            return confidence_sample(d, schedule, num_steps=steps, generator=torch.Generator().manual_seed(args.seed),
                                     confidence="max_prob", **common)
        exact = confidence_recall_per_sequence(oracle, schedule, heldout, num_steps=steps)
        value, se = paired_difference(exact, torch.zeros_like(exact))
        _row("confidence T=1", steps, confident, oracle, source, value, se, "exact", "—", "0")


def _row(name, steps, draw, oracle, source, recall, recall_se, k, change, remaining) -> None:
    drawn = []
    cost = sampler_cost(lambda d: drawn.append(draw(d)) or drawn[-1], oracle, repeats=3)
    quality = sample_quality(drawn[0], source)
    print(f"{name:<18} {steps:>5} {quality['nll_per_token']:>8.4f}±{quality['nll_se']:.4f} {recall:>8.4f}±{recall_se:.4f} "
          f"{k!s:>5} {change:>16} {remaining:>9} {cost['forward_equivalents']:>5.2f} {1000 * cost['wall_s_per_sample']:>7.3f}",
          flush=True)


if __name__ == "__main__":
    main()
