"""Tests of benchmarks/repeat_agreement.py: the closed-form noise-0 agreement rate and an end-to-end run."""

from __future__ import annotations

import json
import math

import torch

from benchmark_module import load_benchmark
from sampler.data import RepeatSource
from sampler.quality.agreement import exact_agreement_rate
from sampler.sampling import ancestral_sample
from theory.schedules import LogLinearSchedule


def test_closed_form_agreement_matches_the_ancestral_sampler_on_a_small_vocabulary():
    """V = 3 (so the V^(1−m) terms matter), L = 4, 2 steps, noise 0: 20 000 seeded samples of the exact
    denoiser within 4 binomial SE of the closed form (false-fail rate about 6e-5)."""
    module = load_benchmark("repeat_agreement")
    schedule = LogLinearSchedule()
    exact = module.exact_ancestral_agreement(3, 4, 2, schedule)
    source = RepeatSource(seq_len=4, vocab_size=3, noise=0.0)
    x = ancestral_sample(source.denoiser(dtype=torch.float64), schedule, num_steps=2, num_samples=20_000, seq_len=4,
                         mask_id=3, vocab_size=3, generator=torch.Generator().manual_seed(4), batch_size=4096)
    rate = exact_agreement_rate(x)["rate"]
    assert abs(rate - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000)
    assert 0.2 < exact < 0.9  # informative: neither trivially 0 nor 1


def test_end_to_end_table(capsys):
    module = load_benchmark("repeat_agreement")
    module.main(["--vocab-size", "16", "--seq-len", "4", "--num", "64", "--steps", "1", "4", "--noise", "0", "0.1"])
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(row["noise"], row["steps"]) for row in rows] == [(0.0, 1), (0.0, 4), (0.1, 1), (0.1, 4)]
    assert rows[0]["exact_rate"] == module.exact_ancestral_agreement(16, 4, 1, LogLinearSchedule())
    assert rows[2]["exact_rate"] is None and math.isfinite(rows[2]["precision"])
    module.main(["--vocab-size", "16", "--seq-len", "4", "--num", "8", "--steps", "4", "--sampler", "max_prob"])
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows[0]["sampler"] == "max_prob" and rows[0]["exact_rate"] is None
