"""`mcd distill --exact-teacher`: the frozen teacher is the source's exact Bayes denoiser, for every method.

The targets a distillation step trains toward are captured at the loss and compared with the exact
posterior p(x_l | visible tokens of z) computed by enumeration over every sequence
(test_sampler_data.brute_force_posteriors, independent of the source's forward-backward), on a
source small enough to enumerate (V = 3, L = 5).  A run that ignores the flag takes its targets from
the random-weight teacher network instead, which is far from the posterior.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from sampler.checkpoint import load_checkpoint, prefixed, save_checkpoint
from sampler.data import HiddenMarkovSource, get_source
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.train import DistillConfig, distill
from sampler.train.distill import ExactTeacher
from test_sampler_data import TINY, brute_force_posteriors
from theory.schedules import LogLinearSchedule

LENGTH = 5
# the modules whose loss / target functions are wrapped (sampler.train re-exports a function named distill)
mcd_module = importlib.import_module("sampler.train.mcd")
shadow_module = importlib.import_module("sampler.train.shadow")
baseline_module = importlib.import_module("sampler.train.baseline")


def _tiny_source() -> HiddenMarkovSource:
    return HiddenMarkovSource(seed=0, seq_len=LENGTH, **TINY)


def _teacher(run_dir: Path, source_description: dict, vocab_size: int) -> Path:
    """A random-weight teacher network checkpoint on the given source (d_model 16, one layer)."""
    config = DenoiserConfig(vocab_size=vocab_size, seq_len=LENGTH, d_model=16, n_layers=1, n_heads=2)
    torch.manual_seed(0)
    tensors = prefixed("model", TransformerDenoiser(config).state_dict())
    meta = {"model_config": config.to_dict(), "source": source_description, "schedule": LogLinearSchedule().describe(), "step": 0}
    save_checkpoint(run_dir, tensors, meta)
    return run_dir


def _config(teacher: Path, out: Path, **overrides) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), start_steps=4, target_steps=2, steps_per_round=2, batch_size=8,
                save_every=2, log_every=1, device="cpu", progress=False, warmup=1, exact_teacher=True)
    base.update(overrides)
    return DistillConfig(**base)


def _assert_exact(log_probs: torch.Tensor, z: torch.Tensor, rows: torch.Tensor, source: HiddenMarkovSource) -> None:
    """log_probs[rows] (float32, the step's targets) equal the enumerated posterior of z at those positions."""
    assert bool(rows.any()), "the captured step has no target to check"
    expected = brute_force_posteriors(source, z.cpu(), source.vocab_size)
    torch.testing.assert_close(log_probs[rows].double().exp(), expected[rows], atol=2e-6, rtol=0)


def test_exact_denoiser_module_keeps_the_network_conventions() -> None:
    """ExactTeacher returns float32 [B, L, K] over the real tokens, SUBS at visible positions (0 on the
    token, −inf elsewhere), no parameters, and needs a source with an exact denoiser."""
    source = _tiny_source()
    teacher = ExactTeacher(source, source.vocab_size)
    z = torch.tensor([[3, 0, 3, 2, 3], [1, 3, 3, 3, 0]])
    out = teacher(z, torch.tensor([0.5, 0.9]))
    assert out.shape == (2, LENGTH, 3) and out.dtype == torch.float32
    visible = z != source.vocab_size
    picked = out.gather(-1, torch.where(visible, z, 0).unsqueeze(-1)).squeeze(-1)
    assert (picked[visible] == 0).all() and (torch.isneginf(out[visible]).sum(-1) == 2).all()
    assert torch.isfinite(out[~visible]).all()
    _assert_exact(out, z, ~visible, source)
    assert len(teacher.state_dict()) == 0 and not list(teacher.parameters())


def _spy_on_targets(method: str, source: HiddenMarkovSource, monkeypatch: pytest.MonkeyPatch) -> list:
    """Wrap the function that receives the step's targets; each call appends (log-probs, z, positions to check):
    MCD's teacher log-probs at (z_s, s) on the tokens z_s masks; the shadow rollout's conditional at each reveal
    (one sub-step, no temperature: the posterior at z_t); the teacher the baseline rolls out, read at z_t."""
    captured: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    if method == "mcd":
        original = mcd_module.mcd_loss

        def spy(student_lp, teacher_lp, x0, z_t, z_s, mask_id, *args, **kwargs):
            captured.append((teacher_lp.detach(), z_s, z_s == mask_id))
            return original(student_lp, teacher_lp, x0, z_t, z_s, mask_id, *args, **kwargs)

        monkeypatch.setattr(mcd_module, "mcd_loss", spy)
    elif method == "shadow":
        original = shadow_module.shadow_rollout_targets

        def spy(frozen, coupling, z_t, *args, **kwargs):
            targets, revealed, z_end, passes = original(frozen, coupling, z_t, *args, **kwargs)
            captured.append((targets, z_t, revealed))
            return targets, revealed, z_end, passes

        monkeypatch.setattr(shadow_module, "shadow_rollout_targets", spy)
    else:
        original = baseline_module.baseline_targets

        def spy(frozen, z_t, t, *args, **kwargs):
            captured.append((frozen(z_t, t.float()), z_t, z_t == source.vocab_size))
            return original(frozen, z_t, t, *args, **kwargs)

        monkeypatch.setattr(baseline_module, "baseline_targets", spy)
    return captured


@pytest.mark.parametrize("method", ["mcd", "shadow", "baseline"])
def test_every_step_targets_are_the_exact_posterior(tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step's targets, from the first one and in both rounds (the exact teacher is never refreshed),
    are the enumerated posterior; the run records the flag."""
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    captured = _spy_on_targets(method, source, monkeypatch)
    extra = {"shadow_substeps": 1, "temperature": False, "coupling": "uniform"} if method == "shadow" else {}
    result = distill(_config(teacher, tmp_path / "out", method=method, **extra))
    assert result["complete"] and len(captured) == 4  # two rounds of two steps
    for log_probs, z, rows in captured:
        _assert_exact(log_probs, z, rows, source)
    _, meta = load_checkpoint(tmp_path / "out")
    assert meta["distill"]["config"]["exact_teacher"] is True
    assert result["teacher_forward_passes"] >= 4


def test_distill_module_uses_the_exact_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sampler.distill_module with config.exact_teacher trains toward the exact posterior too (not its module)."""
    from sampler import distill_module as distil_in_memory

    source = _tiny_source()
    torch.manual_seed(0)
    network = TransformerDenoiser(DenoiserConfig(vocab_size=3, seq_len=LENGTH, d_model=16, n_layers=1, n_heads=2))
    captured = _spy_on_targets("mcd", source, monkeypatch)
    result = distil_in_memory(network, LogLinearSchedule(), source, _config(Path("label"), tmp_path / "out"))
    assert result["step"] == 4 and len(captured) == 4
    for log_probs, z, rows in captured:
        _assert_exact(log_probs, z, rows, source)


def test_exact_teacher_run_resumes_exactly(tmp_path: Path) -> None:
    """A run stopped mid-round and resumed equals the uninterrupted one (no "teacher.*" tensors to restore);
    resuming it without the flag is refused, naming the field."""
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    full = distill(_config(teacher, tmp_path / "full"))
    distill(_config(teacher, tmp_path / "split", max_steps=3))
    with pytest.raises(ValueError, match="exact_teacher"):
        distill(_config(teacher, tmp_path / "split", exact_teacher=False, resume=True))
    resumed = distill(_config(teacher, tmp_path / "split", resume=True))
    assert resumed["complete"] and resumed["teacher_forward_passes"] == full["teacher_forward_passes"] == 4
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    assert not any(name.startswith("teacher.") for name in a)
    trained = [name for name in a if name.startswith(("model.", "ema.", "optim."))]
    assert trained and all(torch.equal(a[name], b[name]) for name in trained)


def test_source_without_exact_denoiser_is_refused_before_training(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 10)
    ngram = get_source(f"ngram:{corpus}", seq_len=LENGTH, order=2)
    teacher = _teacher(tmp_path / "teacher", ngram.describe(), ngram.vocab_size)
    with pytest.raises(ValueError, match="--exact-teacher"):
        distill(_config(teacher, tmp_path / "out"))
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()
    assert distill(_config(teacher, tmp_path / "plain", exact_teacher=False, max_steps=1))["step"] == 1


def test_cli_flag_reaches_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mcd distill --exact-teacher` records exact_teacher in the run's config, and refuses (exit 2, the flag
    named) a teacher whose source has no exact denoiser."""
    from sampler.cli import main

    short = ["--max-steps", "1", "--batch-size", "2", "--no-progress", "--device", "cpu", "--exact-teacher"]
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "out"), *short]) == 0
    assert load_checkpoint(tmp_path / "out")[1]["distill"]["config"]["exact_teacher"] is True
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 20)
    ngram = get_source(f"ngram:{corpus}", seq_len=LENGTH, order=2)
    ngram_teacher = _teacher(tmp_path / "ngram-teacher", ngram.describe(), ngram.vocab_size)
    assert main(["distill", "--teacher", str(ngram_teacher), "--out", str(tmp_path / "refused"), *short]) == 2
    assert "--exact-teacher" in capsys.readouterr().err


def test_distill_command_exit_status_finished_rerun_and_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mcd distill` exits 0 when it finishes and when the same command is run again on the finished run (the
    early return must carry every field the command reads), and 130 when a stop signal ended the run."""
    import sys

    from sampler.cli import main

    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    command = ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "out"), "--start-steps", "4",
               "--target-steps", "4", "--steps-per-round", "2", "--batch-size", "2", "--no-progress", "--device", "cpu",
               "--exact-teacher"]
    assert main(command) == 0
    assert main([*command, "--resume"]) == 0  # finished: returned from the checkpoint
    finished = {"optimizer_steps": 2, "teacher_forward_passes": 2, "wall_time_s": 0.0, "round_steps": [2],
                "complete": False, "step": 1, "interrupted": True}
    monkeypatch.setattr(sys.modules["sampler.train.distill"], "distill", lambda config: finished)  # the command's
    # back-end (sampler.cli.distill.BACKEND), which the dispatcher imports by name
    assert main([*command[:4], str(tmp_path / "other"), *command[5:]]) == 130
