"""Unit tests of masked consistency distillation: the coupled batch, the loss masks, the schedules,
the baseline's targets, exact resumption mid-round and the refusal of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from duality import MaskedCoupling
from sampler.checkpoint import load_checkpoint, prefixed, save_checkpoint
from sampler.batches import distillation_batch, stratified_times
from sampler.losses import baseline_targets, distillation_loss, divergence, mcd_loss, temper
from sampler.train import DistillConfig, distill
from sampler.train.distill import round_step_counts, steps_from_dt, teacher_temperature
from teacher_fixtures import make_teacher
from theory.schedules import LogLinearSchedule

K = 7
MASK = K


def _x0(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, K, (batch, length), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the coupled batch


@settings(max_examples=25)
@given(
    method=st.sampled_from(["threshold", "gaussian", "uniform"]),
    dt=st.floats(min_value=1e-3, max_value=1.0),
    seed=st.integers(0, 2**16),
)
def test_batch_is_nested_and_reveals_true_tokens(method: str, dt: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x0 = _x0(6, 40, seed)
    coupling = MaskedCoupling(LogLinearSchedule(), vocab_size=K, mask_id=MASK, method=method)
    t = stratified_times(6, 0.0, gen)
    z_t, z_s, s = distillation_batch(x0, coupling, t, dt, generator=gen)
    assert torch.equal(s, (t - dt).clamp(min=0.0))
    visible_t, visible_s = z_t != MASK, z_s != MASK
    assert not bool((visible_t & ~visible_s).any()), "z_s must reveal a superset of z_t"
    assert torch.equal(z_t[visible_t], x0[visible_t])
    assert torch.equal(z_s[visible_s], x0[visible_s])


def test_batch_is_a_function_of_the_noise() -> None:
    x0 = _x0(4, 32, 1)
    coupling = MaskedCoupling(LogLinearSchedule(), vocab_size=K, mask_id=MASK)
    noise = coupling.sample_noise(x0, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.2, 0.5, 0.7, 1.0], dtype=torch.float64)
    a = distillation_batch(x0, coupling, t, 0.25, noise=noise)
    b = distillation_batch(x0, coupling, t, 0.25, noise=noise)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    # dt = 1 reaches s = 0, where every token of the log-linear schedule is visible
    _, z_s, s = distillation_batch(x0, coupling, t, 1.0, noise=noise)
    assert float(s.max()) == 0.0 and torch.equal(z_s, x0)


def test_batch_reveals_at_the_schedule_rate() -> None:
    """P(masked at t, visible at s) = α_s − α_t.  4·10^4 tokens: the 5-SE band fails with rate < 1e-6."""
    x0 = _x0(100, 400, 5)
    schedule = LogLinearSchedule()
    coupling = MaskedCoupling(schedule, vocab_size=K, mask_id=MASK)
    t = torch.full((100,), 0.6, dtype=torch.float64)
    z_t, z_s, _ = distillation_batch(x0, coupling, t, 0.2, generator=torch.Generator().manual_seed(0))
    rate = float(((z_t == MASK) & (z_s != MASK)).double().mean())
    expected = schedule.alpha(0.4) - schedule.alpha(0.6)
    assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / x0.numel())


@pytest.mark.parametrize("dt", [0.0, -0.1, 1.5, float("nan")])
def test_batch_refuses_dt_outside_unit_interval(dt: float) -> None:
    coupling = MaskedCoupling(LogLinearSchedule(), vocab_size=K, mask_id=MASK)
    with pytest.raises(ValueError, match="dt"):
        distillation_batch(_x0(2, 4, 0), coupling, torch.tensor([0.5, 0.5], dtype=torch.float64), dt)


# --------------------------------------------------------------------------- losses


def _log_probs(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.log_softmax(torch.randn(batch, length, K, generator=torch.Generator().manual_seed(seed)), -1)


def test_mcd_loss_masks() -> None:
    """CE only where z_s revealed the token, divergence only where z_s still masks it, nothing elsewhere."""
    x0 = torch.tensor([[0, 1, 2, 3, 4, 5]])
    z_t = torch.tensor([[0, MASK, MASK, MASK, MASK, 5]])
    z_s = torch.tensor([[0, 1, 2, MASK, MASK, 5]])  # positions 1, 2 revealed; 3, 4 still masked
    student = _log_probs(1, 6, 0).requires_grad_(True)
    teacher = _log_probs(1, 6, 1)
    loss, stats = mcd_loss(student, teacher, x0, z_t, z_s, MASK)
    assert stats["ce_tokens"] == 2 and stats["div_tokens"] == 2
    loss.backward()
    touched = student.grad.abs().sum(-1)[0] > 0
    assert touched.tolist() == [False, True, True, True, True, False]
    expected_ce = -(student[0, 1, 1] + student[0, 2, 2])
    expected_div = divergence(student[0, 3:5], teacher[0, 3:5]).sum()
    assert torch.allclose(loss, (expected_ce + expected_div) / 4)
    # the teacher is read only where z_s masks; the true token only where z_s revealed
    teacher2 = teacher.clone()
    teacher2[0, [0, 1, 2, 5]] = _log_probs(1, 4, 7)[0]
    x02 = x0.clone()
    x02[0, [3, 4]] = torch.tensor([6, 6])
    assert torch.equal(mcd_loss(student, teacher2, x02, z_t, z_s, MASK)[0], loss)
    teacher3 = teacher.clone()
    teacher3[0, 3] = _log_probs(1, 1, 8)[0, 0]
    assert not torch.equal(mcd_loss(student, teacher3, x0, z_t, z_s, MASK)[0], loss)


def test_mcd_loss_without_cross_entropy_reads_only_still_masked_tokens() -> None:
    """cross_entropy=False: the loss is the mean divergence over the still-masked tokens only (no CE, and the
    revealed tokens neither count in the mean nor get a gradient); the default keeps the CE term."""
    x0 = torch.tensor([[0, 1, 2, 3, 4, 5]])
    z_t = torch.tensor([[0, MASK, MASK, MASK, MASK, 5]])
    z_s = torch.tensor([[0, 1, 2, MASK, MASK, 5]])
    student = _log_probs(1, 6, 0).requires_grad_(True)
    teacher = _log_probs(1, 6, 1)
    loss, stats = mcd_loss(student, teacher, x0, z_t, z_s, MASK, cross_entropy=False)
    assert stats["ce_tokens"] == 0 and stats["div_tokens"] == 2
    assert torch.allclose(loss, divergence(student[0, 3:5], teacher[0, 3:5]).sum() / 2)
    loss.backward()
    assert (student.grad.abs().sum(-1)[0] > 0).tolist() == [False, False, False, True, True, False]
    with_ce, _ = mcd_loss(student, teacher, x0, z_t, z_s, MASK)
    assert not torch.allclose(with_ce, loss)
    with pytest.raises(ValueError, match="no_cross_entropy"):
        DistillConfig(teacher="t", out="o", method="baseline", no_cross_entropy=True).validate()


def test_loss_ignores_subs_minus_infinity() -> None:
    """SUBS puts −inf at visible positions; they must not turn the loss into NaN."""
    student = _log_probs(1, 3, 0)
    teacher = _log_probs(1, 3, 1)
    teacher[0, 0] = float("-inf")
    teacher[0, 0, 2] = 0.0
    z_t = torch.tensor([[MASK, MASK, MASK]])
    z_s = torch.tensor([[2, MASK, MASK]])
    loss, _ = mcd_loss(student, teacher, torch.tensor([[2, 0, 0]]), z_t, z_s, MASK, temperature=0.8)
    assert torch.isfinite(loss)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["reverse_kl", "forward_kl", "js"]))
def test_divergences(seed: int, kind: str) -> None:
    p, q = _log_probs(5, 1, seed)[:, 0], _log_probs(5, 1, seed + 1)[:, 0]
    d = divergence(p, q, kind)
    assert bool((d > 0).all())
    assert torch.allclose(divergence(p, p, kind), torch.zeros(5), atol=1e-6)
    if kind == "js":
        assert torch.allclose(d, divergence(q, p, kind), atol=1e-6) and bool((d <= math.log(2) + 1e-6).all())
    if kind == "forward_kl":  # KL(q‖p) = cross-entropy(q, p) − H(q)
        ce = -(q.exp() * p).sum(-1)
        entropy = -(q.exp() * q).sum(-1)
        assert torch.allclose(d, ce - entropy, atol=1e-5)
    if kind == "reverse_kl":
        assert torch.allclose(d, divergence(q, p, "forward_kl"), atol=1e-6)


def test_divergence_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="divergence"):
        divergence(_log_probs(1, 1, 0)[:, 0], _log_probs(1, 1, 1)[:, 0], "tv")


def test_temper() -> None:
    lp = _log_probs(2, 3, 0)
    assert torch.equal(temper(lp, 1.0), lp)
    sharp = temper(lp, 0.5)
    assert torch.allclose(sharp.exp().sum(-1), torch.ones(2, 3))
    assert torch.allclose(sharp, torch.log_softmax(2 * lp, -1))
    with pytest.raises(ValueError, match="temperature"):
        temper(lp, 0.0)


def test_overlapping_masks_refused() -> None:
    m = torch.tensor([[True, False]])
    with pytest.raises(ValueError, match="overlap"):
        distillation_loss(_log_probs(1, 2, 0), _log_probs(1, 2, 1), m, torch.zeros(1, 2, dtype=torch.long), m)


# --------------------------------------------------------------------------- schedules


def test_temperature_schedule() -> None:
    values = [teacher_temperature(r) for r in range(10)]
    assert values[:3] == pytest.approx([0.96, 0.93, 0.90])
    assert min(values) == pytest.approx(0.75) and values[-1] == pytest.approx(0.75)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert teacher_temperature(5, enabled=False) == 1.0
    assert teacher_temperature(2, start=1.0, step=-0.1, floor=0.5) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="temperature_floor"):
        teacher_temperature(0, floor=0.0)


def test_round_schedule() -> None:
    assert round_step_counts(64, 8) == [64, 32, 16, 8]
    assert round_step_counts(1024, 4) == [1024 // 2**r for r in range(9)]
    assert round_step_counts(16, 16) == [16]
    assert steps_from_dt(1 / 1024) == 1024 and steps_from_dt(1.0) == 1


@pytest.mark.parametrize("start,target", [(48, 8), (64, 128), (64, 0), (64, 3)])
def test_round_schedule_refuses_unreachable_target(start: int, target: int) -> None:
    with pytest.raises(ValueError, match="target_steps"):
        round_step_counts(start, target)


def test_steps_from_dt_refuses_bad_dt() -> None:
    for dt in (0.0, 1.5, 0.3):
        with pytest.raises(ValueError, match="dt"):
            steps_from_dt(dt)


# --------------------------------------------------------------------------- baseline


def test_baseline_targets_follow_the_reveal_time() -> None:
    """Tokens revealed in the first half-step take the teacher's output at (z_t, t); all others the output at the midpoint."""
    calls: list[float] = []

    def teacher(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t[0]))
        probs = torch.full((*z.shape, K), 0.1 / (K - 1))
        probs[..., len(calls) - 1] = 0.9  # first call favours token 0, second token 1
        return probs.log()

    z_t = torch.full((50, 20), MASK)
    t = torch.full((50,), 0.9, dtype=torch.float64)
    targets, passes = baseline_targets(teacher, z_t, t, 0.4, LogLinearSchedule(), MASK, generator=torch.Generator().manual_seed(0))
    assert passes == 2 and calls == pytest.approx([0.9, 0.7])
    favourite = targets.argmax(-1)
    share_first = float((favourite == 0).double().mean())
    # P(revealed in 0.9 → 0.7) = (α(0.7) − α(0.9))/(1 − α(0.9)) ≈ 0.222; 1000 tokens, 6-SE band (false-fail rate < 1e-8)
    p = (0.9 - 0.7) / 0.9
    assert abs(share_first - p) < 6 * math.sqrt(p * (1 - p) / 1000)
    assert set(favourite.unique().tolist()) <= {0, 1}



def test_no_teacher_temperature_unless_asked_for() -> None:
    """The default distillation does not sharpen its teacher; --paper-temperature gives the paper's schedule
    (0.96, −0.03 a round, floor 0.75), a --temperature-* value turns a custom one on, and --no-temperature with
    either is refused.  Planted bug: DistillConfig.temperature defaulting to True again."""
    import argparse

    from sampler.cli import distill as distill_cli
    from sampler.train.config import distill_settings_line

    parser = argparse.ArgumentParser()
    distill_cli.add_arguments(parser)
    base = ["--teacher", "t", "--out", "o"]
    default = distill_cli.config_from_args(parser.parse_args(base))
    assert default.temperature is False and DistillConfig(teacher="t", out="o").temperature is False
    assert "teacher temperature off (T = 1)" in distill_settings_line(default, [64, 32, 16, 8])
    paper = distill_cli.config_from_args(parser.parse_args([*base, "--paper-temperature"]))
    assert paper.temperature is True
    assert [teacher_temperature(r, paper.temperature_start, paper.temperature_step, paper.temperature_floor)
            for r in range(10)] == pytest.approx([0.96, 0.93, 0.90, 0.87, 0.84, 0.81, 0.78, 0.75, 0.75, 0.75])
    assert "teacher temperature 0.96 → 0.93 → 0.9 → 0.87" in distill_settings_line(paper, [64, 32, 16, 8])
    custom = distill_cli.config_from_args(parser.parse_args([*base, "--temperature-floor", "0.9"]))
    assert custom.temperature is True and custom.temperature_floor == 0.9 and custom.temperature_start == 0.96
    with pytest.raises(ValueError, match="--no-temperature contradicts"):
        distill_cli.config_from_args(parser.parse_args([*base, "--no-temperature", "--paper-temperature"]))

# --------------------------------------------------------------------------- the loop


def _tiny(teacher: Path, out: Path, **overrides) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), start_steps=4, target_steps=2, steps_per_round=3,
                batch_size=4, save_every=2, log_every=1, device="cpu", progress=False, warmup=2)
    base.update(overrides)
    return DistillConfig(**base)


@pytest.mark.parametrize("method", ["mcd", "baseline"])
def test_exact_resume_mid_round(tmp_path: Path, method: str) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    full = distill(_tiny(teacher, tmp_path / "full", method=method))
    assert full["complete"] and full["optimizer_steps"] == 6
    assert full["teacher_forward_passes"] == 6 * (1 if method == "mcd" else 2)
    partial = distill(_tiny(teacher, tmp_path / "split", method=method, max_steps=4))  # stops inside round 1
    assert not partial["complete"] and partial["step"] == 4
    resumed = distill(_tiny(teacher, tmp_path / "split", method=method, resume=True))
    assert resumed["complete"] and resumed["teacher_forward_passes"] == full["teacher_forward_passes"]
    a, meta_a = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    for name in a:
        if name.startswith(("model.", "ema.", "teacher.", "optim.")):
            assert torch.equal(a[name], b[name]), name
    assert meta_a["kind"] == "distilled" and meta_a["distill"]["round_steps"] == [4, 2]
    # the finished run loads as a denoiser
    from sampler.checkpoint import load_denoiser

    model, _ = load_denoiser(tmp_path / "full")
    out = model(torch.full((2, 12), model.mask_id), torch.ones(2))
    assert out.shape == (2, 12, model.config.vocab_size)


def test_one_round_run_lengthens_on_resume_exactly(tmp_path: Path) -> None:
    """A finished one-round run resumed with a larger steps_per_round (--allow-changed steps_per_round) trains on
    and ends with the weights of a run started at that length.  Planted bugs: a resume that trusts the stored
    `complete` flag (returns without training: step stays 3), or one that restarts the round (fresh AdamW
    moments: other weights)."""
    teacher = make_teacher(tmp_path / "teacher")
    one_round = dict(start_steps=2, target_steps=2)
    straight = distill(_tiny(teacher, tmp_path / "straight", steps_per_round=5, **one_round))
    assert distill(_tiny(teacher, tmp_path / "split", steps_per_round=3, **one_round))["complete"]
    with pytest.raises(ValueError, match="steps_per_round: run 3, now 5"):
        distill(_tiny(teacher, tmp_path / "split", steps_per_round=5, resume=True, **one_round))
    longer = distill(_tiny(teacher, tmp_path / "split", steps_per_round=5, allow_changed=("steps_per_round",), resume=True, **one_round))
    assert longer["complete"] and longer["step"] == 5 and longer["optimizer_steps"] == straight["optimizer_steps"] == 5
    a, _ = load_checkpoint(tmp_path / "straight")
    b, meta = load_checkpoint(tmp_path / "split")
    assert [k for k in a if k.startswith(("model.", "ema.", "optim.")) and not torch.equal(a[k], b[k])] == []
    assert meta["resumes"][-1] == {"step": 3, "changed": {"steps_per_round": [3, 5]}}
    assert meta["distill"]["config"]["steps_per_round"] == 3 and meta["distill"]["total_steps"] == 5
    before = (tmp_path / "split" / "checkpoint.safetensors").read_bytes()
    for shorter in (5 - 1, 3):  # shortening is refused, even to steps already done (the stored record would lie)
        with pytest.raises(ValueError, match="may only grow"):
            distill(_tiny(teacher, tmp_path / "split", steps_per_round=shorter, allow_changed=("steps_per_round",), resume=True,
                          **one_round))
    assert (tmp_path / "split" / "checkpoint.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="one-round run"):  # with rounds, a new length moves the round boundaries
        distill(_tiny(teacher, tmp_path / "rounds", allow_changed=("steps_per_round",)))
    assert not (tmp_path / "rounds").exists()


def test_refuses_teacher_of_other_vocabulary(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher", vocab_size=30)
    with pytest.raises(ValueError, match="vocab_size"):
        distill(_tiny(teacher, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_refuses_teacher_of_other_mask_id(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher", mask_id=0)
    with pytest.raises(ValueError, match="mask_id"):
        distill(_tiny(teacher, tmp_path / "out"))
    good = make_teacher(tmp_path / "good")
    with pytest.raises(ValueError, match="mask_id"):
        distill(_tiny(good, tmp_path / "out", mask_id=3))
    with pytest.raises(ValueError, match="vocab_size"):
        distill(_tiny(good, tmp_path / "out", vocab_size=3))


def test_refuses_resuming_from_another_teacher(tmp_path: Path) -> None:
    distill(_tiny(make_teacher(tmp_path / "t1"), tmp_path / "out", max_steps=1))
    other = make_teacher(tmp_path / "t2", seq_len=8)
    with pytest.raises(ValueError, match="model_config"):
        distill(_tiny(other, tmp_path / "out", resume=True))


def test_an_existing_run_needs_resume_named_for_the_caller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One resume rule: a run directory holding a checkpoint is continued only with resume (refused untouched
    otherwise), resume without a checkpoint is refused; the library's error names the field `resume=True`, the
    command line's names `--resume`.  Planted bug: distill resuming whatever it finds (the old behaviour)."""
    from sampler.cli import main

    teacher = make_teacher(tmp_path / "teacher")
    distill(_tiny(teacher, tmp_path / "out", max_steps=1))
    before = (tmp_path / "out" / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a checkpoint; set resume=True") as refused:
        distill(_tiny(teacher, tmp_path / "out"))
    assert "--resume" not in str(refused.value)
    with pytest.raises(ValueError, match=r"resume=True: there is no checkpoint"):
        distill(_tiny(teacher, tmp_path / "absent", resume=True))
    args = ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "out"), "--start-steps", "4", "--target-steps", "2",
            "--steps-per-round", "3", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pass --resume to continue it" in err and "resume=True" not in err
    assert (tmp_path / "out" / "checkpoint.safetensors").read_bytes() == before
    assert main([*args, "--resume", "--save-every", "2", "--log-every", "1", "--warmup", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True


@pytest.mark.parametrize(
    "overrides,match",
    [({"target_steps": 3}, "target_steps"), ({"start_steps": 4, "target_steps": 8}, "target_steps"),
     ({"divergence": "tv"}, "divergence"), ({"method": "ode"}, "method"), ({"coupling": "fresh"}, "coupling")],
)
def test_bad_settings_fail_before_training(tmp_path: Path, overrides: dict, match: str) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    with pytest.raises(ValueError, match=match):
        distill(_tiny(teacher, tmp_path / "out", **overrides))
    assert not (tmp_path / "out").exists()


def test_cli_refuses_bad_start_dt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.cli import main

    teacher = make_teacher(tmp_path / "teacher")
    for dt in ("0", "1.5", "0.3"):
        assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "out"), "--start-dt", dt]) == 2
        assert "start_dt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("refresh_from", ["ema", "student"])
def test_teacher_is_refreshed_at_each_round(tmp_path: Path, refresh_from: str) -> None:
    """Round 0 distils from the original teacher; round 1's frozen teacher is the EMA (or the student) at the round boundary."""
    teacher = make_teacher(tmp_path / "teacher")
    distill(_tiny(teacher, tmp_path / "run", refresh_from=refresh_from, max_steps=3))  # end of round 0, before the refresh
    before, _ = load_checkpoint(tmp_path / "run")
    original, _ = load_checkpoint(teacher)
    for name, value in original.items():
        assert torch.equal(before["teacher." + name[len("model."):]], value)
    distill(_tiny(teacher, tmp_path / "run", refresh_from=refresh_from, max_steps=4, resume=True))
    after, _ = load_checkpoint(tmp_path / "run")
    source = "ema." if refresh_from == "ema" else "model."
    for name in original:
        key = name[len("model."):]
        assert torch.equal(after["teacher." + key], before[source + key]), key
    assert not torch.equal(after["teacher.head.weight"], original["model.head.weight"])


def test_gaussian_coupling_trains(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    result = distill(_tiny(teacher, tmp_path / "out", coupling="gaussian", divergence="js", max_steps=2))
    assert result["step"] == 2
