"""`mcd bench-distill`: the end-to-end smoke run (with the recall anchors), bad input before any work, and the
seed means on hand-made comparisons."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from sampler.run.arms import ARMS, NOISE_CONDITIONED_NO_RECALL, SHADOW_SUBSTEPS, Arm, check_arms, register, train_distilled
from sampler.run.bench import BenchConfig, bench, markdown_report, seed_means
from teacher_fixtures import strict_json_loads


def _comparison(steps: int, arm: str, vs: str, seed: int, d_precision: float, dominates: bool) -> dict:
    return {"steps_a": steps, "steps_b": steps, "a": f"{arm}-seed{seed}", "b": vs, "arm_a": arm, "arm_b": vs, "seed": seed,
            "precision": [d_precision, 0.01], "recall": [-0.01, 0.005], "typicality": [0.0, 0.02],
            "entropy": [0.0, 0.01], "fidelity": {"2": [0.001, 0.002]}, "dominates": dominates}


def _value_row(steps: int, arm: str, seed: int, precision: float) -> dict:
    return {"steps": steps, "arm": arm, "seed": seed, "sampler": f"{arm}-seed{seed}", "temperature": 1.0,
            "precision": [precision, 0.02], "recall": [1.5, 0.02]}


def test_seed_means_average_over_training_seeds() -> None:
    comparisons = [_comparison(4, "mcd", "teacher", 0, -0.10, True), _comparison(4, "mcd", "teacher", 1, -0.20, False),
                   _comparison(4, "mcd", "teacher", 2, -0.15, True), _comparison(4, "baseline", "teacher", 0, -0.05, False)]
    rows = [_value_row(4, "mcd", s, p) for s, p in ((0, 1.9), (1, 1.8), (2, 1.85))]
    means = {(e["arm"], e["vs"]): e for e in seed_means(comparisons, rows)}
    mcd = means[("mcd", "teacher")]
    assert mcd["seeds"] == 3 and mcd["dominates"] == 2
    assert mcd["precision"][0] == pytest.approx(-0.15)
    assert mcd["precision"][1] == pytest.approx(0.05 / math.sqrt(3))  # std over seeds / sqrt(seeds)
    assert mcd["precision"][2] == pytest.approx(0.01)  # mean paired SE within a seed
    assert mcd["values"]["precision"][0] == pytest.approx(1.85)
    assert means[("baseline", "teacher")]["seeds"] == 1 and math.isnan(means[("baseline", "teacher")]["precision"][1])


@pytest.mark.parametrize("overrides, name", [
    ({"arms": ("mcd", "no-such-arm")}, "--arms"),
    ({"arms": ()}, "--arms"),
    ({"k": 0}, "k"),
    ({"ngram_orders": (0, 2)}, "ngram_orders"),
    ({"eval_steps": (4, 0)}, "eval_steps"),
    ({"temperatures": (0.8, 0.9)}, "temperatures"),
    ({"temperatures": (0.9, 1.0, 1.0)}, "temperatures must be distinct"),
    ({"start_steps": 8, "target_steps": 3}, "target_steps"),
])
def test_bad_input_is_refused_before_any_work(tmp_path: Path, overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        bench(BenchConfig.smoke_config(str(tmp_path / "out"), **overrides))
    assert not (tmp_path / "out").exists()


def test_a_temperature_sweep_with_tied_precisions_is_no_curve() -> None:
    """A sampler whose draws ignore the temperature gives equal precisions at every T: no curve to place a row
    against (paired_frontier_gap would refuse the tie and end a long bench without a report)."""
    from sampler.run.bench import _curve

    def row(temperature: float, precision: torch.Tensor) -> dict:
        return {"sampler": "teacher", "steps": 4, "temperature": temperature, "precision": [float(precision.mean()), 0.1],
                "recall": [1.5, 0.1], "precision_per_sequence": precision, "recall_per_sequence": torch.ones(3)}

    base = torch.tensor([2.0, 2.1, 2.2], dtype=torch.float64)
    assert len(_curve([row(0.9, base - 0.1), row(1.0, base), row(1.1, base + 0.1)], "teacher", 4)) == 3
    assert _curve([row(0.9, base), row(1.0, base), row(1.1, base + 0.1)], "teacher", 4) is None
    assert _curve([row(1.0, base)], "teacher", 4) is None


def test_the_arm_registry_takes_one_entry_per_arm() -> None:
    assert check_arms(["mcd", "baseline", "mcd"]) == ("mcd", "baseline")
    arm = Arm("test-only-arm", "an arm added by one entry", train_distilled, method="baseline")
    try:
        register(arm)
        assert check_arms(["test-only-arm"]) == ("test-only-arm",) and ARMS["test-only-arm"] is arm
        with pytest.raises(ValueError, match="already registered"):
            register(arm)
    finally:
        ARMS.pop("test-only-arm", None)


@pytest.mark.slow
def test_smoke_benchmark_end_to_end(tmp_path: Path) -> None:
    """The --smoke pipeline (< 2 min): tiny teacher, one seed of each smoke arm, every metric, anchors, plots.

    Checks: (1) the recall anchors through the bench's own recall code: with the exact denoiser at 2^16 steps the
    bound equals the true −log p/L of the same 8 sequences (tolerance 1e-3 per token, covering the ~1 % chance per
    pattern that two tokens share a step), and at 1 step it equals the sum of one-step marginals (to 1e-9);
    (2) the teacher at 1 step is worse than at 16 steps by a paired z > 2 over the smoke's 64 samples (measured
    z ≈ 11; if the two were equally good this would pass with probability 2.5 %, the t tail with 63 degrees of
    freedom); (3) equal optimiser steps for every arm, the baseline
    paying twice MCD's teacher passes; (4) every row has finite metrics with SEs; (5) the shadow arm end to end
    (tiny): trained with the "uniform" coupling and its teacher passes counted, sampled by the noise-shared sampler,
    its recall None with the reason in bench.json, compared with MCD and the baseline on precision only.
    """
    out = tmp_path / "bench"
    result = bench(BenchConfig.smoke_config(str(out)), command="mcd bench-distill --smoke")
    for name in ("bench.md", "bench.json", "bench_pr_16.png", "bench_pr_4.png", "bench_pr_1.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    anchors = result["anchors"]
    assert abs(anchors["many_minus_true"][0]) < 1e-3 and anchors["one_step_max_abs"] < 1e-9, anchors
    assert result["smoke_check"]["z"] > 2.0, result["smoke_check"]
    saved = strict_json_loads((out / "bench.json").read_text())
    samplers = {r["sampler"] for r in saved["rows"]}
    floor = {"floor-T1.2to0.8", "floor-T0.8to1.2", "floor-top0.95", "teacher-confidence", "oracle-confidence"}
    assert samplers == {"teacher", "oracle", "mcd-seed0", "baseline-seed0", "mcd-noce-seed0", "more-training-seed0",
                        "shadow-soft-seed0", "shadow-causal-seed0"} | floor
    assert (out / "bench_cost.png").is_file() and (out / "bench_cost.png").stat().st_size > 0
    for row in saved["rows"]:  # every row: its cost, and (where it has recall) its k and diagnostic
        assert row["cost"]["forward_equivalents"] >= 1 and row["cost"]["wall_s_per_sample"] > 0, row["sampler"]
        diagnostic = row["recall_diagnostic"]
        if row["arm"] == "confidence":  # exact recall: no k, nothing left to converge
            assert diagnostic["estimator"] == "exact" and diagnostic["remaining"] == 0
        elif row["recall"] is not None:
            assert diagnostic["k"] == 4 and diagnostic["remaining"] >= abs(diagnostic["change"])
    one_step = [r for r in saved["rows"] if r["steps"] == 1 and r["arm"] in ("oracle", "teacher")]
    assert all(r["cost"]["forward_equivalents"] == 1.0 for r in one_step)  # one step, one call per sample
    assert all("recall_determined" in c for c in saved["comparisons"] if c.get("dominates") is not None)
    for row in saved["rows"]:
        if row["sampler"] == "floor-top0.95" and row["recall"] is None:
            assert "top-p" in row["unavailable"]["recall"]
            continue
        shadow = row["arm"] == "shadow-soft"  # shadow-causal has a recall bound (the sequential one)
        for key in ("precision",) if shadow else ("precision", "recall"):
            assert math.isfinite(row[key][0]) and row[key][1] > 0, (row["sampler"], key)
        if shadow:
            assert row["recall"] is None and row["unavailable"] == {"recall": NOISE_CONDITIONED_NO_RECALL}
        else:
            assert row["unavailable"] == {}
        assert 0 <= row["typicality"][0] <= 1 and row["typicality"][1] >= 0  # KS = 1, SE 0 when fully separated
        assert set(row["fidelity"]) == {"1", "2", "3"} and all(v[1] > 0 for v in row["fidelity"].values())
    costs = saved["cost"]["students"]
    steps = {c["optimizer_steps"] for c in costs.values()}
    assert len(steps) == 1 and steps.pop() > 0
    assert costs["baseline-seed0"]["teacher_forward_passes"] == 2 * costs["mcd-seed0"]["teacher_forward_passes"]
    shadow = costs["shadow-soft-seed0"]  # at most 2 sub-steps a step reveal something, at least one does
    assert shadow["coupling"] == "uniform" and costs["mcd-seed0"]["coupling"] == "threshold"
    assert 0 < shadow["teacher_forward_passes"] <= SHADOW_SUBSTEPS * shadow["optimizer_steps"]
    shadow_vs = {c["b"]: c for c in saved["comparisons"] if c["a"] == "shadow-soft-seed0" and c["steps_a"] == 4}
    assert {"mcd-seed0", "baseline-seed0", "teacher", "oracle"} <= set(shadow_vs)
    assert all(c["dominates"] is None and "noise-conditioned" in c["reason"] and math.isfinite(c["precision"][0])
               for c in shadow_vs.values())
    causal_vs = [c for c in saved["comparisons"] if c["a"] == "shadow-causal-seed0" and c["steps_a"] == 4]
    assert causal_vs and all(isinstance(c["dominates"], bool) and math.isfinite(c["recall"][0]) for c in causal_vs)
    pairs = {(c["a"], c["b"], c["steps_a"]) for c in saved["comparisons"]}
    assert ("mcd-seed0", "baseline-seed0", 4) in pairs and ("mcd-seed0", "more-training-seed0", 4) in pairs
    assert ("mcd-seed0", "oracle", 16) in pairs
    paper = {(p["run"], tuple(p["cut"])) for p in saved["paper"]}
    assert ("mcd-seed0", (16, 1)) in paper  # the student at 1 step against the teacher at 16
    assert markdown_report(result).startswith("# bench-distill")
    _recompare_reproduces_the_saved_comparisons(out, saved)


def _recompare_reproduces_the_saved_comparisons(out: Path, saved: dict) -> None:
    """benchmarks/bench_recompare.py re-judges OUT from bench.json and bench_per_sequence.pt: with today's code
    every difference, gap and verdict must come back as saved.  Planted bug: rows joined to their per-sequence
    tensors without the temperature in the key (every temperature row then reads the last one's tensors)."""
    from benchmark_module import load_benchmark

    again = load_benchmark("bench_recompare").recompare(out)
    assert len(again["comparisons"]) == len(saved["comparisons"])
    for new, old in zip(again["comparisons"], saved["comparisons"]):
        for key in ("precision", "recall"):
            assert (new.get(key) is None) == (old.get(key) is None)
            if new.get(key) is not None:
                assert new[key][0] == pytest.approx(old[key][0], abs=1e-12), (new["a"], new["b"], key)
        if old.get("frontier_gap") is None:
            assert new.get("frontier_gap") is None
        else:
            assert new["frontier_gap"] == pytest.approx(old["frontier_gap"], abs=1e-12)
        assert new.get("dominates") == old.get("dominates")
    assert again["counts"]["dominates_now"] == again["counts"]["dominates_before"]
    assert any(c.get("frontier_gap") is not None for c in again["comparisons"])  # the curve path was exercised


def test_arms_train_what_they_say(tmp_path: Path, monkeypatch) -> None:
    """Each distilled arm hands distill() its own settings: equal compute = twice the batch at one teacher pass a
    step (as many teacher sequence evaluations as the baseline's two passes at 1x batch), no-CE, forward KL,
    the paper's cuts; everything else (steps, lr, seed) as the bench's."""
    import sampler.run.arms as arms_module  # the module whose `distill` the arms call

    seen = {}
    monkeypatch.setattr(arms_module, "distill", lambda cfg: seen.setdefault(Path(cfg.out).name, cfg) and {})
    config = BenchConfig(out=str(tmp_path), batch_size=16, lr=1e-4)
    for name in ("mcd", "baseline", "mcd-equal-compute", "mcd-noce", "mcd-fkl", "paper-256-16"):
        ARMS[name].train(ARMS[name], config, tmp_path / "teacher", 3)
    cfg = {name.rsplit("-seed", 1)[0]: c for name, c in seen.items()}
    assert cfg["mcd-equal-compute"].batch_size == 2 * cfg["baseline"].batch_size == 32
    assert cfg["mcd-equal-compute"].method == "mcd" and cfg["baseline"].method == "baseline"
    assert cfg["mcd-noce"].no_cross_entropy and not cfg["mcd"].no_cross_entropy
    assert cfg["mcd-fkl"].divergence == "forward_kl" and cfg["mcd"].divergence == "reverse_kl"
    assert (cfg["paper-256-16"].start_steps, cfg["paper-256-16"].target_steps) == (256, 16)
    assert {(c.seed, c.lr, c.steps_per_round) for c in cfg.values()} == {(3, 1e-4, config.steps_per_round)}


def test_a_signal_that_stops_one_training_stops_the_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An arm's run ended by a stop signal (its record says "interrupted") ends the bench there: no later run
    is trained, and `mcd bench-distill` says how to resume and exits 130.  Planted bug: the bench going on
    to the next arm (what a Ctrl-C did before: the loop caught it and returned)."""
    import argparse
    import dataclasses

    from sampler.run.bench import train_arms
    from sampler.cli.bench_distill import run as cli_run
    from sampler.train.loop import StoppedBySignal

    trained = []

    def fake_train(interrupted: bool):
        def train(arm, config, teacher_dir, seed):
            trained.append((arm.name, seed))
            return {"interrupted": interrupted and seed == 1, "step": 7}
        return train

    monkeypatch.setitem(ARMS, "mcd", dataclasses.replace(ARMS["mcd"], train=fake_train(True)))
    monkeypatch.setitem(ARMS, "baseline", dataclasses.replace(ARMS["baseline"], train=fake_train(False)))
    config = BenchConfig.smoke_config(str(tmp_path / "bench"), arms=("mcd", "baseline"), seeds=(0, 1, 2))
    with pytest.raises(StoppedBySignal, match=r"mcd-seed1.*step 7.*same command"):
        train_arms(config, tmp_path)
    assert trained == [("mcd", 0), ("mcd", 1)]

    def stopped_bench(config, command):
        raise StoppedBySignal("stopped by a signal while training X")

    monkeypatch.setattr("sampler.run.bench.bench", stopped_bench)
    assert cli_run(argparse.Namespace(threads=1), config, sys.modules["sampler.run.bench"]) == 130
    assert "stopped by a signal while training X" in capsys.readouterr().err


def test_a_teacher_run_stopped_by_a_signal_is_not_recorded_as_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's own teacher: a stopped training raises StoppedBySignal before its cost file is written (with
    the file, the next bench would reuse the partial teacher as finished).  Planted bug: no check there."""
    from sampler.run.bench import ensure_teacher
    from sampler.train.loop import StoppedBySignal

    config = BenchConfig.smoke_config(str(tmp_path / "bench"))
    monkeypatch.setattr("sampler.run.bench.train", lambda cfg: {"interrupted": True, "step": 5})
    with pytest.raises(StoppedBySignal, match="teacher"):
        ensure_teacher(config)
    assert not (tmp_path / "bench" / "teacher" / "bench_cost.json").exists()
