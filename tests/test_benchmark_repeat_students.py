"""benchmarks/repeat_students.py end to end on tiny runs of the repeat source (V = 6, L = 5).

Each row must come from its own sampler: the floor from the exact denoiser by the ancestral sampler, the MCD and
baseline rows from their own checkpoints, the shadow row from the student by the noise-shared sampler, all on the
one sampler seed; rebuilt here independently and compared sample by sample (through −log p(x)/L, which differs
between the runs).  Planted bugs: the floor row sampled from the teacher network instead of the exact denoiser
(RB1); the --mcd and --baseline lists crossed (RB2); the paired difference to the floor taken against the row at
another step count (RB3); the unigram entropy in bits (RB4).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from benchmark_module import load_benchmark
from sampler.run.open import InferenceConfig, open_for_inference
from sampler.data import RepeatSource
from sampler.quality.agreement import exact_agreement_rate
from sampler.sampling import ancestral_sample
from sampler.shadow.student import shadow_sample
from sampler.train import distill
from test_sampler_exact_teacher import LENGTH, _config, _teacher

VOCAB = 6


def _nll(x: torch.Tensor, source: RepeatSource) -> torch.Tensor:
    return -source.log_prob(x) / LENGTH


def _ancestral(model, schedule, steps: int, num: int, seed: int) -> torch.Tensor:
    return ancestral_sample(model, schedule, num_steps=steps, num_samples=num, seq_len=LENGTH, mask_id=VOCAB, vocab_size=VOCAB,
                            generator=torch.Generator().manual_seed(seed))


def test_unigram_entropy_is_the_plug_in_entropy_in_nats() -> None:
    module = load_benchmark("repeat_students")
    x = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])  # frequencies 1/4, 1/4, 1/2
    assert math.isclose(module.unigram_entropy(x, 3), 1.5 * math.log(2), rel_tol=1e-12)
    assert module.unigram_entropy(torch.zeros(3, 4, dtype=torch.long), 3) == 0.0


def test_rows_come_from_their_own_samplers(tmp_path: Path) -> None:
    source = RepeatSource(seq_len=LENGTH, vocab_size=VOCAB, noise=0.1)
    teacher = _teacher(tmp_path / "teacher", source.describe(), VOCAB)
    runs = {}
    for method, seed in (("shadow", 0), ("mcd", 1), ("baseline", 2)):
        runs[method] = tmp_path / method
        extra = dict(shadow_substeps=4, coupling="uniform", shadow_head="causal") if method == "shadow" else {}
        distill(_config(teacher, runs[method], method=method, start_steps=2, temperature=False, lr=3e-2, seed=seed,
                        **extra))
    num, seed = 64, 3
    args = argparse.Namespace(teacher=str(teacher), shadow=[str(runs["shadow"])], mcd=[str(runs["mcd"])],
                              baseline=[str(runs["baseline"])], steps=[1, 2], num=num, heldout=8, k=2, seed=seed,
                              threads=1)
    module = load_benchmark("repeat_students")
    report = module.run(args)
    rows = {(row["name"], row["steps"]): row for row in report["rows"]}
    assert len(rows) == 2 * 6 == len(report["rows"])
    schedule = open_for_inference(InferenceConfig(ckpt=str(teacher), device="cpu", threads=1)).schedule
    exact = source.denoiser(VOCAB, dtype=torch.float64)
    models = {name: open_for_inference(InferenceConfig(ckpt=str(runs[name]), device="cpu", threads=1)).model
              for name in runs}
    for steps in (1, 2):
        expected = {module.FLOOR: _ancestral(exact, schedule, steps, num, seed),
                    "MCD mcd, ancestral": _ancestral(models["mcd"], schedule, steps, num, seed),
                    "baseline baseline, ancestral": _ancestral(models["baseline"], schedule, steps, num, seed),
                    "shadow shadow, noise-shared": shadow_sample(models["shadow"], schedule, num_steps=steps, num_samples=num, seq_len=LENGTH, seed=seed)}
        floor = rows[(module.FLOOR, steps)]
        for name, x in expected.items():
            row = rows[(name, steps)]
            torch.testing.assert_close(row["per_sequence_nll"], _nll(x, source))
            assert row["agreement"]["rate"] == exact_agreement_rate(x, source)["rate"]
            assert row["recall"] is not None and row["recall"]["k"] == 2
            difference = row["per_sequence_nll"] - floor["per_sequence_nll"]
            assert math.isclose(row["vs_floor"]["precision"], float(difference.mean()), rel_tol=1e-9, abs_tol=1e-12)
        # the runs sample differently at this seed, so a crossed row would be caught
        assert not torch.equal(expected["MCD mcd, ancestral"], expected["baseline baseline, ancestral"])
        assert not torch.equal(expected[module.FLOOR], _ancestral(models["mcd"], schedule, steps, num, seed))
        assert rows[("exact, confidence max_prob", steps)]["recall"]["k"] == "exact"
    # the floor's precision differs between step counts, so a difference against the wrong step's floor shows
    assert not torch.equal(rows[(module.FLOOR, 1)]["per_sequence_nll"], rows[(module.FLOOR, 2)]["per_sequence_nll"])
    table = module.format_table(report)
    assert table.count("\n| ") == 1 + len(report["rows"])  # header + one line per row


def test_noise_zero_rows_keep_recall_when_precision_is_infinite() -> None:
    """At noise 0 one inconsistent sample makes precision +inf (two_axis refuses it); the row still reports the
    inconsistent share and the recall of the same k patterns that two_axis would have drawn (equal to a run on
    consistent samples with the same seed, where two_axis computes it)."""
    module = load_benchmark("repeat_students")
    source = RepeatSource(seq_len=LENGTH, vocab_size=VOCAB, noise=0.0)
    exact = source.denoiser(VOCAB, dtype=torch.float64)
    from theory.schedules import LogLinearSchedule

    heldout = source.sample_batch(6, LENGTH, torch.Generator().manual_seed(0))
    consistent = source.sample_batch(4, LENGTH, torch.Generator().manual_seed(1))
    mixed = torch.cat([consistent, torch.tensor([[0, 1, 0, 0, 0]])])
    rows = [module.measure("r", x, 0.0, source, 2, heldout, 3, recall_of=exact, schedule=LogLinearSchedule(), steps=2)
            for x in (consistent, mixed)]
    assert rows[0]["inconsistent_share"] == 0.0 and math.isfinite(rows[0]["precision"])
    assert rows[1]["inconsistent_share"] == 0.2 and rows[1]["precision"] == math.inf
    torch.testing.assert_close(rows[1]["recall"]["per_sequence"], rows[0]["recall"]["per_sequence"])
