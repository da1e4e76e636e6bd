"""Teacher benchmark: sample quality against the number of ancestral steps, and throughput.

    python benchmarks/bench_teacher.py [--ckpt runs/bench_teacher] [--minutes 10] [--num 256]

Uses the checkpoint in --ckpt, training the default teacher (`mcd train` defaults: exact
source, tiny model) for --minutes first when there is none.  Prints, side by side:

- quality at 1024, 256, 64, 16, 8, 4 steps: per-token NLL of the samples under the true
  source (± SE), its excess over the entropy rate (the floor), the unigram entropy of the
  samples (diversity), and the paired difference to the 1024-step samples (same sampler seed:
  same random stream, so the shared noise cancels);
- reference rows: data drawn from the source itself (≈ the floor) and the unigram baseline
  (i.i.d. tokens from the source's marginal);
- training throughput (tokens/s, median of repeats) and sampling throughput (tokens/s,
  cached and uncached) on the CPU, and on CUDA when present.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler.batches import teacher_batch  # noqa: E402
from sampler.losses import elbo_loss  # noqa: E402
from sampler.checkpoint import checkpoint_path, load_denoiser, load_schedule, load_source  # noqa: E402
from sampler.data import paired_difference, sample_quality  # noqa: E402
from sampler.model import TransformerDenoiser  # noqa: E402
from sampler.sampling import ancestral_sample  # noqa: E402
from sampler.train import TrainConfig, train  # noqa: E402
from sampler.device import autocast  # noqa: E402
from sampler.train.runtime import build_optimizer  # noqa: E402


def training_throughput(config, source, schedule, device: torch.device, batch_size: int, steps: int, repeats: int) -> float:
    """Median tokens/s of `steps` optimizer steps of a fresh model (after one warm-up step)."""
    torch.manual_seed(0)
    model = TransformerDenoiser(config).to(device)
    opt = build_optimizer(model, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x0 = source.sample_batch(batch_size, config.seq_len, gen).to(device)
    rates = []
    for rep in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            z_t, t = teacher_batch(x0, schedule, config.mask_id, gen)
            with autocast(device):
                log_probs = model(z_t, t)
            loss = elbo_loss(log_probs, x0, z_t, t, schedule, config.mask_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if rep:  # the first repeat warms up
            rates.append(steps * x0.numel() / (time.perf_counter() - start))
    return statistics.median(rates)


def sampling_throughput(model, schedule, device: torch.device, num: int, steps: int, cached: bool, repeats: int) -> float:
    cfg = model.config
    rates = []
    for rep in range(repeats):
        start = time.perf_counter()
        ancestral_sample(model, schedule, num_steps=steps, num_samples=num, seq_len=cfg.seq_len, mask_id=cfg.mask_id, vocab_size=cfg.vocab_size,
                         generator=torch.Generator().manual_seed(rep), cached=cached, device=device, batch_size=num)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(num * cfg.seq_len / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="runs/bench_teacher", help="teacher run directory (trained when absent)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget when the checkpoint is absent")
    parser.add_argument("--num", type=int, default=256, help="samples per step count")
    parser.add_argument("--steps", default="1024,256,64,16,8,4", help="comma-separated step counts")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (shared across step counts: paired)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each throughput measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    step_counts = [int(s) for s in args.steps.split(",")]

    if not checkpoint_path(args.ckpt).exists():
        print(f"no checkpoint at {args.ckpt}: training the default teacher for {args.minutes:g} minutes")
        summary = train(TrainConfig(out=args.ckpt, minutes=args.minutes, device="cpu"))
        if summary["interrupted"]:
            print(f"teacher training stopped by a signal at step {summary['step']} (checkpoint saved); no benchmark run",
                  file=sys.stderr)
            raise SystemExit(130)
        print(f"trained {summary['step']} steps at {summary['steps_per_s']:.2f} steps/s")
    model, meta = load_denoiser(args.ckpt)
    schedule = load_schedule(meta)
    source = load_source(meta)
    cfg = model.config
    if not getattr(source, "exact", False):
        print("the checkpoint's source is not exact: NLL under the true source is unavailable")
        return 1
    floor = source.entropy_rate(cfg.seq_len)
    print(f"teacher {args.ckpt}: step {meta['step']}, {model.num_parameters():,} parameters, source {source.name}, "
          f"K={cfg.vocab_size}, L={cfg.seq_len}, schedule {meta['schedule']['name']}")
    print(f"floor (entropy rate): {floor[0]:.4f} ± {floor[1]:.4f} nats/token\n")

    rows = []
    data = source.sample_batch(args.num, cfg.seq_len, torch.Generator().manual_seed(10_000 + args.seed))
    rows.append(("data (source)", sample_quality(data, source, entropy_rate=floor), None, float("nan")))
    freq = torch.bincount(source.sample_batch(4096, cfg.seq_len, torch.Generator().manual_seed(1)).reshape(-1),
                          minlength=cfg.vocab_size).double()
    unigram = torch.multinomial(freq / freq.sum(), args.num * cfg.seq_len, replacement=True,
                                generator=torch.Generator().manual_seed(2)).reshape(args.num, cfg.seq_len)
    rows.append(("unigram baseline", sample_quality(unigram, source, entropy_rate=floor), None, float("nan")))
    reference = None
    for n in step_counts:
        start = time.perf_counter()
        samples = ancestral_sample(model, schedule, num_steps=n, num_samples=args.num, seq_len=cfg.seq_len, mask_id=cfg.mask_id, vocab_size=cfg.vocab_size,
                                   generator=torch.Generator().manual_seed(args.seed), cached=not cfg.time_conditioning)
        seconds = time.perf_counter() - start
        q = sample_quality(samples, source, entropy_rate=floor)
        if reference is None:
            reference = q["per_sequence_nll"]
            diff = None
        else:
            diff = paired_difference(q["per_sequence_nll"], reference)
        rows.append((f"teacher {n} steps", q, diff, args.num * cfg.seq_len / seconds))

    ref_name = f"{step_counts[0]} steps"
    print(f"{'':<20} {'NLL/token':>17} {'excess':>8} {'unigram H':>15} {'vs ' + ref_name:>18} {'tokens/s':>9}")
    for name, q, diff, rate in rows:
        d = f"{diff[0]:+.4f} ± {diff[1]:.4f}" if diff is not None else ""
        r = f"{rate:9.0f}" if rate == rate else ""
        print(f"{name:<20} {q['nll_per_token']:8.4f} ± {q['nll_se']:.4f} {q['excess']:8.4f} "
              f"{q['unigram_entropy']:7.4f} ± {q['unigram_entropy_se']:.4f} {d:>18} {r:>9}")

    print("\nthroughput (median of repeats)")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        m = model.to(device)
        train_rate = training_throughput(cfg, source, schedule, device, 64, 10 if device.type == "cpu" else 50, args.repeats)
        plain = sampling_throughput(m, schedule, device, 64, 64, cached=False, repeats=args.repeats)
        cached = sampling_throughput(m, schedule, device, 64, 64, cached=True, repeats=args.repeats)
        print(f"  {device.type}: training {train_rate:,.0f} tokens/s (batch 64 x {cfg.seq_len}); sampling 64 steps "
              f"{plain:,.0f} tokens/s uncached, {cached:,.0f} cached (x{cached / plain:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
