"""benchmarks/shadow_heldout_loss.py: a shadow run's EMA and raw weights on the same unseen batches.

The expected losses are rebuilt here from the pieces (the source's batch, grid times, the coupling's noise,
the exact teacher's rollout targets, forward KL), not by the benchmark's own path.  Planted bugs: the EMA
flag ignored (EMA = raw), the held-out seed not applied (the run's own batches), the first round's dt
instead of the last one's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sampler.batches import stratified_times
from sampler.checkpoint import load_checkpoint, model_weights, subset
from sampler.losses import distillation_loss
from sampler.shadow.student import ShadowConfig, ShadowStudent, load_shadow_student
from sampler.train import distill
from sampler.train.distill import ExactTeacher, step_generator, teacher_temperature
from sampler.train.shadow import grid_times, shadow_batch, shadow_rollout_targets
from benchmark_module import load_benchmark
from test_sampler_exact_teacher import LENGTH, _config, _teacher, _tiny_source
from teacher_fixtures import strict_json_loads


def _benchmark():
    return load_benchmark("shadow_heldout_loss")


def _expected_raw_loss(run: Path, seed: int, k: int, dt: float, batch_size: int, teacher: torch.nn.Module | None = None,
                       temperature: float = 1.0, hard: bool = False) -> float:
    """The raw weights' training loss on batch k of step generator (seed, rank 0, k), against `teacher` (default:
    the exact denoiser): forward KL per revealed token (design A) or the cross-entropy to the rollout's end (B)."""
    from duality import MaskedCoupling

    source = _tiny_source()
    student, _ = load_shadow_student(run, use_ema=False)
    generator = step_generator(seed, 0, k)
    x0 = source.sample_batch(batch_size, LENGTH, generator)
    t = grid_times(stratified_times(batch_size, dt, generator), dt)
    coupling = MaskedCoupling(student.schedule, vocab_size=source.vocab_size, mask_id=source.vocab_size, method="uniform")
    z_t, noise = shadow_batch(x0, coupling, t, generator)
    teacher = ExactTeacher(source, source.vocab_size) if teacher is None else teacher
    targets, revealed, z_end, _ = shadow_rollout_targets(teacher, coupling, z_t, t, dt, 2, noise, temperature)
    with torch.no_grad():
        student_lp = student(z_t, t.float(), noise=noise)
        if hard:
            loss, _ = distillation_loss(student_lp, targets, torch.zeros_like(revealed), z_end, revealed)
        else:
            loss, _ = distillation_loss(student_lp, targets, revealed, torch.zeros_like(z_t), torch.zeros_like(revealed),
                                        "forward_kl")
    return float(loss)


def test_heldout_losses_are_the_last_rounds_loss_on_unseen_batches(tmp_path: Path) -> None:
    """Two rounds (4 then 2 steps: dt 1/4, then 1/2), a fast EMA, so EMA and raw weights differ after 4 steps.
    The raw loss on held-out batch k equals the loss rebuilt from batch k of the held-out seed at dt = 1/2."""
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    run = tmp_path / "run"
    distill(_config(teacher, run, method="shadow", shadow_substeps=2, temperature=False, coupling="uniform",
                    lr=3e-2, ema_decay=0.5))
    tensors, _ = load_checkpoint(run)
    ema, raw = model_weights(tensors, True), model_weights(tensors, False)
    assert any(not torch.equal(ema[name], raw[name]) for name in raw)
    losses = _benchmark().heldout_losses(str(run), batches=3, seed=77)
    assert set(losses) == {"ema", "raw"} and all(len(v) == 3 for v in losses.values())
    for k in range(3):
        assert losses["raw"][k] == pytest.approx(_expected_raw_loss(run, 77, k, 0.5, 8), rel=1e-6)
        assert losses["raw"][k] != pytest.approx(_expected_raw_loss(run, 0, k, 0.5, 8), rel=1e-6)  # the run's own batches
        assert losses["raw"][k] != pytest.approx(_expected_raw_loss(run, 77, k, 0.25, 8), rel=1e-6)  # the first round's dt
    assert losses["ema"] != pytest.approx(losses["raw"], rel=1e-6)
    wider = _benchmark().heldout_losses(str(run), batches=1, seed=77, batch_size=5)["raw"][0]
    assert wider == pytest.approx(_expected_raw_loss(run, 77, 0, 0.5, 5), rel=1e-6)


@pytest.mark.parametrize("target", ["soft", "hard"])
def test_a_network_teacher_run_is_read_at_its_last_rounds_teacher_and_temperature(tmp_path: Path, target: str) -> None:
    """A network teacher (refreshed from the EMA at round 1, stored as "teacher.*") with the teacher temperature on,
    designs A and B.  Planted bugs: round 0's temperature (0.96 instead of 0.93) and the student standing in for
    the stored teacher (design A: both move every target), design B read as design A."""
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    run = tmp_path / "run"
    distill(_config(teacher, run, method="shadow", shadow_substeps=2, coupling="uniform", temperature=True, lr=3e-2, ema_decay=0.5,
                    exact_teacher=False, shadow_target=target))
    tensors, meta = load_checkpoint(run)
    student = load_shadow_student(run, use_ema=False)[0]
    frozen = ShadowStudent(student.base.config, ShadowConfig.from_dict(meta["shadow"]["config"]), student.schedule)
    frozen.load_state_dict(subset(tensors, "teacher"), strict=True)
    frozen.eval()
    raw = _benchmark().heldout_losses(str(run), batches=2, seed=77)["raw"]
    hard, last_round = target == "hard", teacher_temperature(1)
    assert last_round != teacher_temperature(0)
    for k in range(2):
        expected = lambda **changes: _expected_raw_loss(  # noqa: E731
            run, 77, k, 0.5, 8, **{"teacher": frozen, "temperature": last_round, "hard": hard, **changes})
        assert raw[k] == pytest.approx(expected(), rel=1e-6)
        if hard:
            assert raw[k] != pytest.approx(expected(hard=False), rel=1e-6)
        else:
            assert raw[k] != pytest.approx(expected(temperature=teacher_temperature(0)), rel=1e-6)
            assert raw[k] != pytest.approx(expected(teacher=student), rel=1e-6)


def test_a_run_stopped_inside_its_first_round_is_read_at_that_round(tmp_path: Path) -> None:
    """Two rounds planned (4 then 2 steps), stopped after 1 step (max_steps): the loss is round 0's, dt = 1/4.
    Planted bug: the last planned round taken whatever the step (dt = 1/2).  The CLI writes the same per-batch
    losses to --out with the batch size."""
    
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    run = tmp_path / "run"
    distill(_config(teacher, run, method="shadow", shadow_substeps=2, temperature=False, coupling="uniform", max_steps=1))
    assert load_checkpoint(run)[1]["step"] == 1
    module = _benchmark()
    raw = module.heldout_losses(str(run), batches=2, seed=77)["raw"]
    for k in range(2):
        assert raw[k] == pytest.approx(_expected_raw_loss(run, 77, k, 0.25, 8), rel=1e-6)
        assert raw[k] != pytest.approx(_expected_raw_loss(run, 77, k, 0.5, 8), rel=1e-6)
    assert module.main(["--run", str(run), "--batches", "2", "--seed", "77", "--out", str(tmp_path / "h.json")]) == 0
    written = strict_json_loads((tmp_path / "h.json").read_text())
    assert written["batch_size"] == 8 and written["raw"] == pytest.approx(raw, rel=1e-12)


def test_bad_input_is_refused_by_name_before_any_work(tmp_path: Path) -> None:
    """Not a shadow run; a seed the run trained on (its batches are not held out), including one set on a resume."""
    source = _tiny_source()
    teacher = _teacher(tmp_path / "teacher", source.describe(), source.vocab_size)
    with pytest.raises(ValueError, match="run=.*not a `mcd distill --method shadow` run"):
        _benchmark().heldout_losses(str(teacher), batches=2, seed=1)
    run = tmp_path / "run"
    base = dict(method="shadow", shadow_substeps=1, temperature=False, coupling="uniform", steps_per_round=1, start_steps=2,
                target_steps=2)
    distill(_config(teacher, run, seed=3, **base))
    distill(_config(teacher, run, seed=5, allow_changed=("seed", "steps_per_round"), resume=True, **{**base, "steps_per_round": 2}))
    for trained_on in (3, 5):
        with pytest.raises(ValueError, match=f"seed={trained_on} is a seed run=.* trained on"):
            _benchmark().heldout_losses(str(run), batches=2, seed=trained_on)
    assert len(_benchmark().heldout_losses(str(run), batches=2, seed=4)["raw"]) == 2
