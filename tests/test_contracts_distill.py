"""Contracts of the distillation loop: what it feeds the frozen teacher and the student at every step.

A recording subclass of the denoiser replaces the one the loop builds (student and frozen teacher
alike), and the data source records each clean batch x0.  Per MCD step (round r, dt_r = 2^r / N0):

    student(z_t, t),  teacher(z_s, s),  s = t − dt_r,  t ∈ [dt_r, 1],
    visible(z_t) ⊆ visible(z_s), and both show the true tokens of x0;

per baseline step: teacher(z_t, t), teacher(z_mid, t − dt_r/2) with z_mid ⊇ z_t, student(z_t, t).
The student starts from the teacher checkpoint's EMA weights.  Planted bugs caught: the teacher
read at (z_t, t) instead of (z_s, s); dt never changing across rounds; the student started from
the raw weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

# Library names in one place (re-point here when the modules move).
from sampler.checkpoint import load_checkpoint
from sampler.train import DistillConfig, distill
from teacher_fixtures import make_teacher

# the module, not the function `sampler.train.distill` that shadows it as a package attribute
distill_module = importlib.import_module("sampler.train.distill")

# Where the loop looks up the classes and functions it builds: patched here.
DENOISER_HOME, DENOISER_NAME = importlib.import_module("sampler.train.methods"), "TransformerDenoiser"
GET_SOURCE_HOME, GET_SOURCE_NAME = distill_module, "get_source"

START_STEPS, TARGET_STEPS, STEPS_PER_ROUND = 4, 1, 2  # rounds with dt = 1/4, 1/2, 1
MASK = 32  # the embedded source's vocabulary size, the teacher's mask id


class LoopRecorder:
    """Installs the recording denoiser and source; `calls` holds (role, z, t) of every forward pass
    (role "teacher" for a model in eval mode, "student" in train mode), `batches` every x0."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self.batches: list[torch.Tensor] = []
        calls, batches = self.calls, self.batches
        base = getattr(DENOISER_HOME, DENOISER_NAME)
        real_get_source = getattr(GET_SOURCE_HOME, GET_SOURCE_NAME)

        class RecordingDenoiser(base):
            def forward(self, z, t=None):
                calls.append(("student" if self.training else "teacher", z.detach().clone(), t.detach().clone()))
                return super().forward(z, t)

        def recording_get_source(*args, **kwargs):
            source = real_get_source(*args, **kwargs)
            sample_batch = source.sample_batch

            def recorded(*a, **k):
                x0 = sample_batch(*a, **k)
                batches.append(x0.clone())
                return x0

            source.sample_batch = recorded
            return source

        monkeypatch.setattr(DENOISER_HOME, DENOISER_NAME, RecordingDenoiser)
        monkeypatch.setattr(GET_SOURCE_HOME, GET_SOURCE_NAME, recording_get_source)

    def steps(self, calls_per_step: int) -> list[list[tuple[str, torch.Tensor, torch.Tensor]]]:
        assert len(self.calls) == calls_per_step * len(self.batches)
        return [self.calls[i : i + calls_per_step] for i in range(0, len(self.calls), calls_per_step)]


def config(teacher: Path, out: Path, **overrides) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), start_steps=START_STEPS, target_steps=TARGET_STEPS,
                steps_per_round=STEPS_PER_ROUND, batch_size=8, save_every=100, log_every=100, device="cpu",
                progress=False, warmup=1)
    return DistillConfig(**{**base, **overrides})


def round_dt(step: int) -> float:
    """dt_r = 2^r / N0 for the round r of an optimiser step."""
    return 2 ** (step // STEPS_PER_ROUND) / START_STEPS


def check_shows_true_tokens(z: torch.Tensor, x0: torch.Tensor) -> None:
    visible = z != MASK
    assert torch.equal(z[visible], x0[visible])


def recorded_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, calls_per_step: int):
    """(recorder, calls grouped per optimiser step) of a full 3-round distillation of a tiny teacher."""
    teacher = make_teacher(tmp_path / "teacher")
    recorder = LoopRecorder(monkeypatch)
    distill(config(teacher, tmp_path / "out", method=method))
    steps = recorder.steps(calls_per_step)
    assert len(steps) == 3 * STEPS_PER_ROUND
    return recorder, steps


def test_mcd_teacher_reads_the_less_masked_state_at_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, steps = recorded_run(tmp_path, monkeypatch, "mcd", 2)
    extra_reveals = 0
    for step, ((role_a, z_s, s), (role_b, z_t, t)) in enumerate(steps):
        assert (role_a, role_b) == ("teacher", "student")
        dt = round_dt(step)
        assert float(t.min()) >= dt - 1e-6 and float(t.max()) <= 1.0
        torch.testing.assert_close(t - s, torch.full_like(t, dt), atol=1e-6, rtol=0)
        assert float(s.min()) >= 0.0
        visible_t, visible_s = z_t != MASK, z_s != MASK
        assert not bool((visible_t & ~visible_s).any()), f"step {step}: z_s must reveal a superset of z_t"
        check_shows_true_tokens(z_t, recorder.batches[step])
        check_shows_true_tokens(z_s, recorder.batches[step])
        extra_reveals += int((visible_s & ~visible_t).sum())
    assert extra_reveals > 0  # the pairs differ: z_s is strictly less masked somewhere


def test_baseline_teacher_rolls_out_two_half_steps_from_z_t(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, steps = recorded_run(tmp_path, monkeypatch, "baseline", 3)
    mid_reveals = 0
    for step, ((role_a, z_first, t_first), (role_b, z_mid, t_mid), (role_c, z_t, t)) in enumerate(steps):
        assert (role_a, role_b, role_c) == ("teacher", "teacher", "student")
        dt = round_dt(step)
        assert torch.equal(z_first, z_t) and torch.equal(t_first, t)
        assert float(t.min()) >= dt - 1e-6 and float(t.max()) <= 1.0
        torch.testing.assert_close(t - t_mid, torch.full_like(t, dt / 2), atol=1e-6, rtol=0)
        visible_t = z_t != MASK
        assert torch.equal(z_mid[visible_t], z_t[visible_t])  # the rollout only reveals
        check_shows_true_tokens(z_t, recorder.batches[step])
        mid_reveals += int(((z_mid != MASK) & ~visible_t).sum())
    assert mid_reveals > 0  # the second call sees the rolled-out state, not z_t again


def test_student_and_frozen_teacher_start_from_the_teachers_ema(tmp_path: Path) -> None:
    """The teacher checkpoint holds distinct raw and EMA weights; the distillation starts from the EMA."""
    teacher = make_teacher(tmp_path / "teacher", seed=0, ema_seed=1)
    distill(config(teacher, tmp_path / "out", max_steps=0))  # writes the initial state, no step
    started, _ = load_checkpoint(tmp_path / "out")
    original, _ = load_checkpoint(teacher)
    names = [name[len("ema."):] for name in original if name.startswith("ema.")]
    assert names and any(not torch.equal(original["ema." + n], original["model." + n]) for n in names)
    for n in names:
        for role in ("model", "teacher"):
            assert torch.equal(started[f"{role}.{n}"], original["ema." + n]), f"{role}.{n}"
