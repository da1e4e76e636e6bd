"""Exact-agreement rate of few-step samplers with the exact denoiser on the repeat source.

For each noise level and step count: the fraction of samples whose tokens are all equal (beside the
source's own P(all equal)), and the precision E_q[−log p(x)]/L under the true source (+inf at noise 0
as soon as one sample is inconsistent; the share of such samples is printed).  At noise 0 the ancestral
sampler's rate is also computed exactly: a sample agrees iff the tokens revealed at the first step that
reveals any all agree, so rate = Σ_i Π_{j<i}(1 − p_j)^L Σ_{m≥1} Binom(m; L, p_i) V^{1−m}.

    PYTHONPATH=. python benchmarks/repeat_agreement.py --vocab-size 1024 --seq-len 10 --num 4096
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from sampler.data import RepeatSource
from sampler.quality.agreement import exact_agreement_rate
from sampler.sampling import reveal_probabilities
from sampler.sampling import ancestral_sample
from theory.schedules import LogLinearSchedule


def exact_ancestral_agreement(vocab_size: int, seq_len: int, steps: int, schedule) -> float:
    """The noise-0 ancestral agreement rate in closed form (see the module docstring)."""
    probs = reveal_probabilities(schedule, steps).tolist()
    rate, none_yet = 0.0, 1.0
    for p in probs:
        rate += none_yet * sum(math.comb(seq_len, m) * p**m * (1 - p) ** (seq_len - m) * vocab_size ** (1 - m)
                               for m in range(1, seq_len + 1))
        none_yet *= (1 - p) ** seq_len
    return rate


def sample(sampler: str, denoiser, schedule, steps: int, num: int, seq_len: int, vocab_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_steps=steps, num_samples=num, seq_len=seq_len, mask_id=vocab_size, vocab_size=vocab_size,
                  generator=generator)
    if sampler == "ancestral":
        return ancestral_sample(denoiser, schedule, **common)
    from sampler.confidence import confidence_sample

    return confidence_sample(denoiser, schedule, confidence=sampler, **common)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=10)
    parser.add_argument("--num", type=int, default=4096)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--sampler", default="ancestral", choices=["ancestral", "max_prob", "sampled_prob"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    schedule = LogLinearSchedule()
    print("| noise | steps | agreement | ± SE | source P(all equal) | exact (noise 0, ancestral) | precision "
          "E[−log p]/L | inconsistent samples |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for noise in args.noise:
        source = RepeatSource(seq_len=args.seq_len, vocab_size=args.vocab_size, noise=noise)
        denoiser = source.denoiser(dtype=torch.float64)
        for steps in args.steps:
            x = sample(args.sampler, denoiser, schedule, steps, args.num, args.seq_len, args.vocab_size, args.seed)
            agreement = exact_agreement_rate(x, source)
            nll = -source.log_prob(x) / args.seq_len
            impossible = float(torch.isinf(nll).double().mean())
            exact = (exact_ancestral_agreement(args.vocab_size, args.seq_len, steps, schedule)
                     if noise == 0 and args.sampler == "ancestral" else None)
            row = {"sampler": args.sampler, "noise": noise, "steps": steps, **agreement, "exact_rate": exact,
                   "precision": float(nll.mean()), "precision_se": float(nll.std() / math.sqrt(len(nll))),
                   "impossible_share": impossible}
            rows.append(row)
            exact_text = "–" if exact is None else f"{exact:.4f}"
            precision = (f"{row['precision']:.3f} ± {row['precision_se']:.3f}" if math.isfinite(row["precision"])
                         else "inf")
            print(f"| {noise} | {steps} | {agreement['rate']:.4f} | {agreement['se']:.4f} | "
                  f"{agreement['reference']:.4f} | {exact_text} | {precision} | {impossible:.4f} |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
