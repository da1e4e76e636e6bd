"""Held-out loss of a shadow-student run: its EMA weights against its raw weights, on the same unseen batches.

The batches, targets and loss are the run's own training step (sampler.train.shadow.shadow_distill_step at the
round of the run's last step, with its stored frozen teacher: its dt, teacher temperature, sub-steps and
design; the batch size and other settings as changed by any resumption), drawn from the step generators of
`--seed`, which must not be a seed the run trained on.  For design A the loss is the forward KL per revealed token from
the teacher's noise-shared rollout conditionals to the student; for design B the cross-entropy to the
rollout's endpoint.  Per batch b: d_b = loss_EMA − loss_raw; printed: each mean and mean(d) ± sd(d)/sqrt(B).

Why: `mcd sample`, `mcd eval` and the benchmarks use the EMA weights, so whether averaging helps (and how much
a longer `--ema-decay` might add) is read here, on data neither set of weights was fitted to.

    python benchmarks/shadow_heldout_loss.py --run RUN [--batches 40] [--seed 12345] [--batch-size B] [--out F.json]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch

from sampler.checkpoint import load_checkpoint, subset
from sampler.cli._common import add_threads_argument, int_at_least
from sampler.data import get_source, strict_json
from sampler.rundir import check_output_path
from sampler.shadow.student import ShadowConfig, ShadowStudent, load_shadow_student
from sampler.train.config import DistillConfig
from sampler.train.distill import DistillContext, ExactTeacher, round_step_counts, teacher_temperature
from sampler.train.runtime import EMA, Trainee, build_optimizer
from sampler.train.shadow import shadow_distill_step


def _frozen_teacher(run: str, meta: dict[str, Any], config: DistillConfig, source: Any, student: ShadowStudent) -> Any:
    """The run's frozen teacher of its current round: the source's exact denoiser, or the stored "teacher.*" weights."""
    if config.exact_teacher:
        return ExactTeacher(source, student.base.config.mask_id).eval()
    tensors, _ = load_checkpoint(run)
    frozen = ShadowStudent(student.base.config, ShadowConfig.from_dict(meta["shadow"]["config"]), student.schedule)
    frozen.load_state_dict(subset(tensors, "teacher"), strict=True)
    return frozen.eval()


def _effective_config(meta: dict[str, Any]) -> tuple[DistillConfig, set[int]]:
    """(the run's config with every resumption's allowed changes applied, every seed it trained on)."""
    resumes = meta.get("resumes", [])
    seeds = {int(meta["distill"]["config"]["seed"])}
    seeds |= {int(record["changed"]["seed"][1]) for record in resumes if "seed" in record.get("changed", {})}
    return DistillConfig.from_dict(DistillConfig.effective_dict(meta["distill"]["config"], resumes)), seeds


def heldout_losses(run: str, batches: int, seed: int, batch_size: int | None = None) -> dict[str, list[float]]:
    """{"ema": [...], "raw": [...]}: the run's training loss at the round of its last step, on `batches` batches
    of the step generators of `seed`, each of `batch_size` sequences (None: the run's; give one to compare runs
    trained at different batch sizes on the same batches).  ValueError when the run is no shadow run or `seed`
    is one it trained on."""
    _, meta = load_checkpoint(run)
    if "shadow" not in meta or "distill" not in meta:
        raise ValueError(f"run={run!r} is not a `mcd distill --method shadow` run (no 'shadow' entry in its meta)")
    config, trained = _effective_config(meta)
    if seed in trained:
        raise ValueError(f"seed={seed} is a seed run={run!r} trained on ({sorted(trained)}): its batches are not held out")
    config = dataclasses.replace(config, seed=seed, batch_size=config.batch_size if batch_size is None else batch_size)
    counts = round_step_counts(config.start_steps, config.target_steps)
    last = min(max(int(meta["step"]) - 1, 0) // config.steps_per_round, len(counts) - 1)  # the round of the last step
    source = get_source(**meta["source"])
    students = {name: load_shadow_student(run, use_ema=use_ema)[0] for name, use_ema in (("ema", True), ("raw", False))}
    from duality import MaskedCoupling

    base = students["ema"].base.config
    coupling = MaskedCoupling(students["ema"].schedule, vocab_size=base.vocab_size, mask_id=base.mask_id, method=config.coupling)
    frozen = _frozen_teacher(run, meta, config, source, students["ema"])
    temperature = teacher_temperature(last, config.temperature_start, config.temperature_step, config.temperature_floor,
                                      config.temperature)
    losses: dict[str, list[float]] = {}
    for name, student in students.items():
        never_stepped = Trainee(student, student, build_optimizer(student), EMA(student))  # read, never stepped
        ctx = DistillContext(never_stepped, frozen, source, coupling, students["ema"].schedule, config,
                             counts, int(meta.get("seq_len", base.seq_len)), base.mask_id, 0, 1, torch.device("cpu"),
                             round_index=last, dt=1.0 / counts[last], temperature=temperature)
        step = shadow_distill_step(ctx)
        with torch.no_grad():
            losses[name] = [float(step(k).loss) for k in range(batches)]
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--run", required=True, help="a `mcd distill --method shadow` run directory")
    parser.add_argument("--batches", type=int_at_least(2), default=40, help="held-out batches (of --batch-size sequences each)")
    parser.add_argument("--seed", type=int_at_least(0), default=12345, help="step-generator seed; pick one the run did not train on")
    parser.add_argument("--batch-size", type=int_at_least(1), default=None, help="sequences per batch (default: the run's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the per-batch losses here as JSON (to pair runs evaluated on the same batches)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.out is not None:
        check_output_path(args.out, kind="file", name="--out")
    torch.set_num_threads(args.threads)
    losses = heldout_losses(args.run, args.batches, args.seed, args.batch_size)
    diffs = torch.tensor(losses["ema"], dtype=torch.float64) - torch.tensor(losses["raw"], dtype=torch.float64)
    _, meta = load_checkpoint(args.run)
    batch_size = args.batch_size or _effective_config(meta)[0].batch_size
    print(f"{args.run} at step {meta['step']}, {args.batches} held-out batches of {batch_size} (seed {args.seed}):")
    for name, values in losses.items():
        print(f"  {name:<4} loss {sum(values) / len(values):.5f}")
    print(f"  EMA − raw {float(diffs.mean()):+.5f} ± {float(diffs.std()) / math.sqrt(len(diffs)):.5f} (paired over batches)")
    if args.out is not None:
        args.out.write_text(strict_json({"run": args.run, "step": meta["step"], "seed": args.seed, "batch_size": batch_size,
                                         **losses}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
