"""`mcd bench-distill` arms beyond MCD and the baseline: the shadow arms (trained by distill's shadow step, sampled
by the noise-shared sampler, recall reported as unavailable with its reason), the arm's recall hook, and a
teacher on a real-text source (the metrics that need exact likelihood reported as unavailable, not as zero)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sampler.run.arms import (
    ARMS, NOISE_CONDITIONED_NO_RECALL, SHADOW_COUPLING, SHADOW_SUBSTEPS, Arm, check_arms, noise_shared, register,
    train_distilled,
)
from sampler.run.bench import DEFAULT_ARMS, BenchConfig, EvalContext, SamplerSpec, bench, sampler_rows
from sampler.data import get_source
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.shadow.noise import noise_shared_sample, sample_shadow_noise
from sampler.shadow.student import ShadowConfig, shadow_student_from_teacher
from theory import LogLinearSchedule
from teacher_fixtures import strict_json_loads

SCHEDULE = LogLinearSchedule()


def _noisy_student(vocab_size: int = 8, seq_len: int = 10, draw: str = "quantile"):
    """A shadow student whose noise weights are non-zero (it reads the noise), on a random tiny teacher."""
    torch.manual_seed(0)
    teacher = TransformerDenoiser(DenoiserConfig(vocab_size=vocab_size, seq_len=seq_len, d_model=16, n_layers=1, n_heads=2))
    student = shadow_student_from_teacher(teacher.state_dict(), teacher.config, ShadowConfig(), SCHEDULE).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        student.noise_mlp[2].weight.normal_(std=0.5)
        student.draft_embed.weight.normal_(std=0.5)
    student.draw = draw
    return student


# --------------------------------------------------------------------------- registration


def test_shadow_arms_are_registered_beside_mcd_and_the_baseline_but_not_by_default() -> None:
    assert check_arms(["shadow-soft", "shadow-hard"]) == ("shadow-soft", "shadow-hard")
    for name, target in (("shadow-soft", "soft"), ("shadow-hard", "hard")):
        arm = ARMS[name]
        assert (arm.method, arm.coupling, arm.shadow_target) == ("shadow", "uniform", target)
        assert arm.compare_to == ("mcd", "baseline") and arm.sample is noise_shared
        assert arm.recall_fn() is None and arm.no_recall_reason == NOISE_CONDITIONED_NO_RECALL
        assert name not in DEFAULT_ARMS
    assert ARMS["mcd"].recall_fn() is not None  # the reveal-pattern bound
    with pytest.raises(ValueError, match="--arms.*unknown arm.*shadow-soft"):
        check_arms(["shadow-sotf"])


def test_cli_help_lists_the_shadow_arms(capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.cli import main

    assert main(["bench-distill", "--help"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens
    assert "shadow-soft," in text and "shadow-hard" in text and "coupling" in text


def test_an_arm_without_recall_must_say_why() -> None:
    with pytest.raises(ValueError, match="no_recall_reason"):
        Arm("test-no-recall", "bad arm", train_distilled, recall=False)


def test_shadow_arms_train_by_the_shadow_step_on_the_bench_rounds(tmp_path: Path, monkeypatch) -> None:
    """Same rounds, optimiser steps, batch, lr and seed as MCD; method "shadow" with 2 sub-steps a step and the
    "uniform" coupling whatever the bench's --coupling (the cost record says which coupling each run used)."""
    import sampler.run.arms as arms_module  # the module whose `distill` the arms call

    seen = {}
    monkeypatch.setattr(arms_module, "distill", lambda cfg: seen.setdefault(Path(cfg.out).name, cfg) and {"optimizer_steps": 1})
    config = BenchConfig(out=str(tmp_path), batch_size=16, lr=1e-4, coupling="threshold")
    records = {name: ARMS[name].train(ARMS[name], config, tmp_path / "teacher", 5)
               for name in ("mcd", "shadow-soft", "shadow-hard", "shadow-causal")}
    cfg = {name.rsplit("-seed", 1)[0]: c for name, c in seen.items()}
    assert cfg["mcd"].coupling == "threshold" and records["mcd"]["coupling"] == "threshold"
    for name, target, head in (("shadow-soft", "soft", "input"), ("shadow-hard", "hard", "input"),
                               ("shadow-causal", "soft", "causal")):
        c = cfg[name]
        assert (c.method, c.coupling, c.shadow_target, c.shadow_substeps) == ("shadow", SHADOW_COUPLING, target, SHADOW_SUBSTEPS)
        assert c.shadow_head == head, name
        assert records[name]["coupling"] == "uniform"
        same = ("start_steps", "target_steps", "steps_per_round", "batch_size", "lr", "seed", "temperature")
        assert {k: getattr(c, k) for k in same} == {k: getattr(cfg["mcd"], k) for k in same}


# --------------------------------------------------------------------------- sampling and recall


@pytest.mark.parametrize("draw", ["quantile", "argmax"])
def test_a_shadow_arm_is_sampled_by_the_noise_shared_sampler_from_the_bench_seed(draw: str) -> None:
    """The arm's sampler is the noise-shared one, its noise drawn from the bench's sampler seed: the samples equal
    noise_shared_sample on sample_shadow_noise(seed) (built here from the pieces), and a student that reads the
    noise gives other samples under another seed.  Planted bug caught: `sample=ancestral` for the shadow arms
    (the plain sampler calls the student without its noise and fails)."""
    student = _noisy_student(draw=draw)
    arm = ARMS["shadow-soft" if draw == "quantile" else "shadow-hard"]
    drawn = arm.sample(student, SCHEDULE, 4, 64, 10, 1.0, 1234, "cpu")
    noise = sample_shadow_noise(64, 10, SCHEDULE, 8, 8, torch.Generator().manual_seed(1234), method="uniform")
    if draw == "argmax":
        from sampler.shadow.student import ArgmaxShadowDenoiser

        expected = noise_shared_sample(ArgmaxShadowDenoiser(student), SCHEDULE, num_steps=4, noise=noise, mask_id=8, vocab_size=8)
    else:
        expected = noise_shared_sample(student, SCHEDULE, num_steps=4, noise=noise, mask_id=8, vocab_size=8)
    assert torch.equal(drawn, expected)
    assert not torch.equal(drawn, arm.sample(student, SCHEDULE, 4, 64, 10, 1.0, 4321, "cpu"))


def _exact_context(tmp_path: Path, heldout: int = 6) -> EvalContext:
    source = get_source("exact", seed=0, seq_len=8)
    config = BenchConfig(out=str(tmp_path), num_samples=16, heldout=heldout, k=2, ngram_orders=(1, 2), num_bootstrap=5)
    held = source.sample_batch(heldout, 8, torch.Generator().manual_seed(1))
    return EvalContext(config, source, SCHEDULE, 8, held)


def test_the_recall_hook_takes_another_bound_in_one_line(tmp_path: Path) -> None:
    """An arm whose `recall` is a function gets that function's per-sequence values as its recall (the coming
    causal student's sequential bound plugs in here); recall=False reports the arm's reason instead."""
    ctx = _exact_context(tmp_path)
    calls = []

    def fixed_recall(denoiser, schedule, heldout, *, steps, temperatures, k, generator, device):
        calls.append((steps, tuple(temperatures), k, heldout.shape))
        return torch.arange(heldout.shape[0], dtype=torch.float64).expand(len(temperatures), -1) + 1.0

    arm = Arm("test-hooked", "an arm with its own recall", train_distilled, recall=fixed_recall)
    try:
        register(arm)
        spec = SamplerSpec("hooked", arm.name, 0, ctx.source.denoiser(), ARMS["mcd"].sample, ARMS[arm.name].recall_fn())
        (row,) = sampler_rows(ctx, spec, 4, (1.0,))
    finally:
        ARMS.pop("test-hooked", None)
    assert calls == [(4, (1.0,), 2, (6, 8))]
    assert row["recall"][0] == pytest.approx(3.5) and row["recall"][1] == pytest.approx(math.sqrt(3.5 / 6))
    assert "recall" not in row["unavailable"]
    none = SamplerSpec("none", "x", 0, ctx.source.denoiser(), ARMS["mcd"].sample, None, "because of a test")
    (row,) = sampler_rows(ctx, none, 4, (1.0,))
    assert row["recall"] is None and row["unavailable"] == {"recall": "because of a test"}
    assert row["precision"][1] > 0 and set(row["fidelity"]) == {1, 2}


# --------------------------------------------------------------------------- a real-text teacher


@pytest.mark.slow
def test_on_a_real_text_source_the_exact_likelihood_metrics_are_unavailable_not_zero(tmp_path: Path) -> None:
    """A teacher on raw text: the bench runs (no error), and precision, recall, fidelity, typicality, the oracle and
    the anchors are None with the reason naming the source, in bench.json and bench.md; unigram entropy is
    reported.  Planted bugs caught: the old refusal (ValueError before any work), and 0.0 in place of None."""
    from teacher_fixtures import make_text_teacher

    teacher, _ = make_text_teacher(tmp_path)
    out = tmp_path / "bench"
    result = bench(BenchConfig.smoke_config(str(out), teacher=str(teacher), arms=("mcd",), eval_steps=(4, 2),
                                            temperatures=(1.0,), num_samples=8, heldout=4, start_steps=4, target_steps=2,
                                            steps_per_round=2, batch_size=4))
    saved = strict_json_loads((out / "bench.json").read_text())
    reason = "has no exact likelihood"
    for key in ("precision", "recall", "fidelity", "typicality", "oracle", "anchors", "entropy_rate"):
        assert reason in saved["unavailable"][key], key
    assert saved["entropy_rate"] is None and saved["anchors"] is None and saved["smoke_check"] is None
    assert {r["sampler"] for r in saved["rows"]} == {"teacher", "mcd-seed0"}
    for row in saved["rows"]:
        for key in ("precision", "recall", "fidelity", "typicality"):
            assert row[key] is None and reason in row["unavailable"][key], (row["sampler"], key)
        assert math.isfinite(row["unigram_entropy"][0]) and row["unigram_entropy"][0] > 0
    assert all(c["dominates"] is None and c["precision"] is None for c in saved["comparisons"])
    report = (out / "bench.md").read_text()
    assert "## Unavailable" in report and reason in report and "n/a" in report
    assert result["plots"] == []
