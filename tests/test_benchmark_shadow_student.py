"""benchmarks/shadow_student.py end to end on tiny runs: the per-token-independent comparison rows.

Each of `--mcd` and `--baseline` adds a row sampled by the plain ancestral sampler from its own checkpoint, with
its sampler seed, so its per-sequence precision is −log p(x)/L of those samples (rebuilt here from the
checkpoint, the sampler and the source's log-probability). Planted bug: a row sampled from the other run
(the loop variable read late, or the two flags crossed); it would give the MCD row the baseline's samples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sampler.run.open import open_run
from sampler.sampling import ancestral_sample
from sampler.train import distill
from benchmark_module import load_benchmark
from teacher_fixtures import strict_json_loads
from test_sampler_exact_teacher import LENGTH, _config, _teacher, _tiny_source


def _ancestral_nll(run: Path, steps: int, num: int, seed: int) -> torch.Tensor:
    opened = open_run(run, "cpu", threads=1)
    model, meta, schedule = opened.model, opened.meta, opened.schedule
    source = _tiny_source()
    x = ancestral_sample(lambda z, t: model(z, t), schedule, num_steps=steps, num_samples=num, seq_len=LENGTH, mask_id=source.vocab_size, vocab_size=source.vocab_size,
                         generator=torch.Generator().manual_seed(seed))
    return -source.log_prob(x) / LENGTH


def test_mcd_and_baseline_rows_come_from_their_own_checkpoints(tmp_path: Path) -> None:
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    runs = {}
    for method, seed in (("shadow", 0), ("mcd", 1), ("baseline", 2)):
        runs[method] = tmp_path / method
        extra = dict(shadow_substeps=2, coupling="uniform", shadow_head="causal") if method == "shadow" else {}
        distill(_config(teacher, runs[method], method=method, temperature=False, lr=3e-2, seed=seed, **extra))
    args = argparse.Namespace(teacher=str(teacher), student=str(runs["shadow"]), mcd=str(runs["mcd"]),
                              baseline=str(runs["baseline"]), oracle=True, oracle_temperatures=[0.5, 2.0], steps=2,
                              rollout_steps=0, num=16, seed=5, threads=1, out=None)
    benchmark = load_benchmark("shadow_student")
    report = benchmark.run(args)
    benchmark.write_report(report, tmp_path / "report.json")
    written = strict_json_loads((tmp_path / "report.json").read_text())
    assert [row["name"] for row in written["rows"]] == [row["name"] for row in report["rows"]]
    rows = {row["name"]: row for row in report["rows"]}
    assert report["baseline"] == str(runs["baseline"])
    expected = {"MCD student, ancestral": _ancestral_nll(runs["mcd"], 2, 16, 5),
                "baseline student, ancestral": _ancestral_nll(runs["baseline"], 2, 16, 5)}
    assert not torch.allclose(*expected.values())  # the two runs sample differently: the test can tell them apart
    for name, nll in expected.items():
        torch.testing.assert_close(torch.as_tensor(rows[name]["precision"]["per_sequence"]).double(), nll.double())
        assert rows[name]["recall"] is not None and "floor_curve" in rows[name]
