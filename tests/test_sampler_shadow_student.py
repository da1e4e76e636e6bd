"""The shadow student: noise-conditioned denoiser (starts as the teacher, reads the noise only where
masked, its new weights learn), the teacher's noise-shared rollout targets (design A), the training step on
the shared loop, checkpoints that say they need noise, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duality import MaskedCoupling
from sampler.checkpoint import ShadowCheckpointError, load_checkpoint, load_denoiser
from sampler.run.open import open_run
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.run.sample import SampleConfig, sample_from_checkpoint
from sampler.sampling import ancestral_sample
from sampler.shadow.noise import ShadowNoise, noise_shared_sample, sample_shadow_noise, sorted_quantile_draw
from sampler.shadow.student import (
    ShadowConfig,
    ShadowStudent,
    check_noise_for,
    load_shadow_student,
    set_ablation,
    shadow_sample,
    shadow_student_from_teacher,
)
from sampler.train.config import DistillConfig
from sampler.train.distill import distill
from sampler.train.shadow import grid_times, shadow_batch, shadow_rollout_targets
from teacher_fixtures import make_teacher
from theory import LogLinearSchedule

K, L = 8, 10
MASK = K
SCHEDULE = LogLinearSchedule()


def _teacher(seed: int = 0) -> TransformerDenoiser:
    torch.manual_seed(seed)
    return TransformerDenoiser(DenoiserConfig(vocab_size=K, seq_len=L, d_model=16, n_layers=1, n_heads=2)).eval()


def _student(teacher: TransformerDenoiser, draft: bool = True) -> ShadowStudent:
    return shadow_student_from_teacher(teacher.state_dict(), teacher.config, ShadowConfig(draft=draft), SCHEDULE)


def _noise(n: int, seed: int = 1) -> ShadowNoise:
    return sample_shadow_noise(n, L, SCHEDULE, K, MASK, torch.Generator().manual_seed(seed))


def _half_masked(n: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, K, (n, L), generator=g)
    return torch.where(torch.rand(n, L, generator=g) < 0.5, torch.full_like(z, MASK), z)


def _perturb_noise_weights(student: ShadowStudent, seed: int = 3) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        student.noise_mlp[2].weight.normal_(std=0.5)
        if student.draft_embed is not None:
            student.draft_embed.weight.normal_(std=0.5)


# --------------------------------------------------------------------------- the noise-conditioned student


@pytest.mark.parametrize("draft", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_student_equals_teacher_at_init(draft: bool, training: bool) -> None:
    """Zero-initialised noise weights: the fresh student computes the teacher's function exactly
    (planted bug caught: a normally initialised last MLP layer or draft embedding)."""
    teacher = _teacher()
    student = _student(teacher, draft).train(training)
    z, t = _half_masked(6), torch.linspace(0.2, 1.0, 6)
    expected = teacher(z, t)
    got = student(z, t, noise=_noise(6))
    assert torch.equal(got, expected)


def test_noise_enters_only_at_masked_positions() -> None:
    """With non-zero noise weights the output at masked positions changes with the category noise, and a
    token's prediction is unchanged when only the noise of *visible* positions changes (planted bug caught:
    the offset applied at every position)."""
    teacher = _teacher()
    student = _student(teacher).eval()
    _perturb_noise_weights(student)
    z, t = _half_masked(4), torch.full((4,), 0.6)
    noise = _noise(4)
    base = student(z, t, noise=noise)
    masked = z == MASK
    other_c = torch.where(masked, torch.rand(4, L, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).clamp(1e-6, 1 - 1e-6),
                          noise.category)
    moved = student(z, t, noise=ShadowNoise(noise.reveal, other_c, noise.method, K))
    assert (moved - base)[masked].abs().max() > 1e-3
    visible_c = torch.where(masked, noise.category, torch.full_like(noise.category, 0.123))
    same = student(z, t, noise=ShadowNoise(noise.reveal, visible_c, noise.method, K))
    assert torch.allclose(same, base, atol=1e-6)
    assert torch.equal(base[~masked].argmax(-1), z[~masked])  # SUBS: visible tokens copied


def test_noise_weights_get_gradient_at_init() -> None:
    """At init (zero noise weights) one backward pass moves the new weights: the zero offset must still be
    computed while training (planted bug caught: skipping the noise input whenever its weights are zero)."""
    teacher = _teacher()
    student = _student(teacher).train()
    z, t = _half_masked(6), torch.full((6,), 0.7)
    target = torch.log_softmax(torch.randn(6, L, K, generator=torch.Generator().manual_seed(4)), -1)
    log_p = student(z, t, noise=_noise(6))
    masked = z == MASK
    loss = -(target.exp() * log_p)[masked].sum()
    loss.backward()
    assert student.noise_mlp[2].weight.grad.abs().sum() > 0
    assert student.draft_embed.weight.grad.abs().sum() > 0


def test_ablations() -> None:
    """"zero" is the base network; "fresh" reads another category noise (differs from "none")."""
    teacher = _teacher()
    student = _student(teacher).eval()
    _perturb_noise_weights(student)
    z, t, noise = _half_masked(4), torch.full((4,), 0.6), _noise(4)
    normal = student(z, t, noise=noise)
    set_ablation(student, "zero")
    assert torch.equal(student(z, t, noise=noise), student.base(z, t))
    set_ablation(student, "fresh", seed=5)
    assert (student(z, t, noise=noise) - normal).nan_to_num().abs().max() > 1e-3
    with pytest.raises(ValueError, match="ablation"):
        set_ablation(student, "sometimes")


def test_student_refuses_bad_noise() -> None:
    student = _student(_teacher())
    z, t = _half_masked(4), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match="noise has shape"):
        student(z, t, noise=_noise(3))
    with pytest.raises(ValueError, match="noise must be a ShadowNoise"):
        student(z, t, noise=torch.rand(4, L))
    with pytest.raises(ValueError, match="noise is on"):
        check_noise_for(_noise(4), z.to("meta"))


# --------------------------------------------------------------------------- rollout targets (design A)


def _reveal_noise(n: int, seed: int = 6) -> tuple[torch.Tensor, MaskedCoupling, ShadowNoise]:
    coupling = MaskedCoupling(SCHEDULE, vocab_size=K, mask_id=MASK, method="uniform")
    x0 = torch.randint(0, K, (n, L), generator=torch.Generator().manual_seed(seed))
    z_t, noise = shadow_batch(x0, coupling, torch.full((n,), 0.75, dtype=torch.float64), torch.Generator().manual_seed(seed + 1))
    return z_t, coupling, noise


def test_rollout_targets_are_the_conditionals_at_each_reveal() -> None:
    """Target of a token revealed in sub-step (t_{j+1}, t_j] = teacher at (z_{t_j}, t_j), where z_{t_j} is
    rebuilt independently from the rollout's end: z_end where the coupling shows the token at t_j, else mask
    (planted bug caught: every target taken from the first sub-step, the teacher at z_t)."""
    teacher = _teacher()
    z_t, coupling, noise = _reveal_noise(8)
    t, dt, substeps = torch.full((8,), 0.75, dtype=torch.float64), 0.5, 4
    targets, revealed, z_end, passes = shadow_rollout_targets(teacher, coupling, z_t, t, dt, substeps, noise)
    assert 1 <= passes <= substeps
    assert torch.equal(revealed, (z_t == MASK) & (z_end != MASK))
    later = 0
    for j in range(substeps):
        t_j, t_next = 0.75 - dt * j / substeps, 0.75 - dt * (j + 1) / substeps
        shown_j = coupling.visible(noise.reveal, t_j) | (z_t != MASK)
        z_j = torch.where(shown_j, z_end, torch.full_like(z_end, MASK))
        here = revealed & ~shown_j & coupling.visible(noise.reveal, t_next)
        if here.any():
            expected = teacher(z_j, torch.full((8,), t_j))
            assert torch.allclose(targets[here], expected[here], atol=1e-6)
            later += int(here.sum()) if j > 0 else 0
    assert later > 0  # the check reached sub-steps after the first


def test_rollout_end_is_the_noise_shared_sampler() -> None:
    """From all masks, a rollout 1 -> 0 in N sub-steps is the N-step noise-shared sampler on the same noise
    (the rollout uses the sampler's own step)."""
    teacher = _teacher()
    noise = _noise(6, seed=11)
    z = torch.full((6, L), MASK)
    _, revealed, z_end, _ = shadow_rollout_targets(teacher, MaskedCoupling(SCHEDULE, K, MASK, method="uniform"), z,
                                                   torch.ones(6, dtype=torch.float64), 1.0, 4, noise)
    assert torch.equal(z_end, noise_shared_sample(teacher, SCHEDULE, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K))
    assert bool(revealed.all())


def test_target_does_not_read_the_tokens_own_category_noise() -> None:
    """Design A's soundness: changing c of one revealed token leaves its own target unchanged (it may change
    later tokens' targets).  Planted bug caught: the target taken after the token's own draw (next sub-step)."""
    teacher = _teacher()
    z_t, coupling, noise = _reveal_noise(8, seed=21)
    t = torch.full((8,), 0.75, dtype=torch.float64)
    targets, revealed, _, _ = shadow_rollout_targets(teacher, coupling, z_t, t, 0.5, 4, noise)
    rows, cols = revealed.nonzero(as_tuple=True)
    for b, l in list(zip(rows.tolist(), cols.tolist()))[:10]:
        category = noise.category.clone()
        category[b, l] = 1.0 - category[b, l]
        other, _, _, _ = shadow_rollout_targets(teacher, coupling, z_t, t, 0.5, 4,
                                                ShadowNoise(noise.reveal, category, noise.method, K))
        assert torch.equal(other[b, l], targets[b, l])


def test_rollout_refuses_unreachable_steps_before_any_teacher_call() -> None:
    def teacher(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher must not be called")

    z_t, coupling, noise = _reveal_noise(4)
    with pytest.raises(ValueError, match="dt=0.5 steps below time 0"):
        shadow_rollout_targets(teacher, coupling, z_t, torch.full((4,), 0.25, dtype=torch.float64), 0.5, 2, noise)
    with pytest.raises(ValueError, match="substeps must be an int >= 1"):
        shadow_rollout_targets(teacher, coupling, z_t, torch.full((4,), 0.75, dtype=torch.float64), 0.5, 0, noise)


def test_grid_times_round_up_to_the_student_grid() -> None:
    t = torch.tensor([0.01, 0.25, 0.26, 0.5, 0.74, 1.0], dtype=torch.float64)
    assert torch.equal(grid_times(t, 0.25), torch.tensor([0.25, 0.25, 0.5, 0.5, 0.75, 1.0], dtype=torch.float64))


# --------------------------------------------------------------------------- training, checkpoints, samplers


def _shadow_config(teacher: Path, out: Path, **overrides) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), method="shadow", coupling="uniform", start_steps=4, target_steps=2,
                steps_per_round=2, shadow_substeps=2, batch_size=4, save_every=2, log_every=1, device="cpu",
                progress=False, warmup=1, temperature=False)
    base.update(overrides)
    return DistillConfig(**base)


def test_shadow_distill_trains_and_its_checkpoint_needs_noise(tmp_path: Path) -> None:
    """`mcd distill --method shadow`: the rounds run, teacher passes are counted (at most S per step), the noise
    weights move, the checkpoint records that it needs noise; the plain loader and ancestral sampler refuse it
    naming the checkpoint; `mcd sample` on it uses the noise-shared sampler without extra flags."""
    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    result = distill(_shadow_config(teacher, tmp_path / "student"))
    assert result["complete"] and result["round_steps"] == [4, 2]
    assert 1 <= result["teacher_forward_passes"] <= 4 * 2
    tensors, meta = load_checkpoint(tmp_path / "student")
    assert meta["shadow"]["sampler"] == "noise_shared" and meta["shadow"]["reveal_method"] == "uniform"
    assert tensors["model.noise_mlp.2.weight"].abs().sum() > 0
    with pytest.raises(ShadowCheckpointError, match="student.*shadow student"):
        load_denoiser(tmp_path / "student")
    opened = open_run(tmp_path / "student", "cpu")
    model, schedule = opened.model, opened.schedule
    assert isinstance(model, ShadowStudent)
    with pytest.raises(ValueError, match="reads the shadow noise"):
        ancestral_sample(model, schedule, num_steps=2, num_samples=2, seq_len=12, mask_id=model.mask_id, vocab_size=model.config.vocab_size)
    out = sample_from_checkpoint(SampleConfig(ckpt=str(tmp_path / "student"), steps=2, num=3, seed=4, device="cpu",
                                              out=str(tmp_path / "s.jsonl")))
    direct = shadow_sample(load_shadow_student(tmp_path / "student")[0], schedule, num_steps=2, num_samples=3, seq_len=12, seed=4)
    assert torch.equal(out["samples"], direct)


def test_shadow_settings_fail_before_training(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    with pytest.raises(ValueError, match="coupling must be 'uniform' or 'threshold'"):
        distill(_shadow_config(teacher, tmp_path / "a", coupling="gaussian"))
    with pytest.raises(ValueError, match="shadow_substeps must be an int >= 1"):
        distill(_shadow_config(teacher, tmp_path / "b", shadow_substeps=0))
    with pytest.raises(ValueError, match="shadow_target must be one of"):
        distill(_shadow_config(teacher, tmp_path / "c", shadow_target="medium"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_noise_shared_sampler_with_a_zero_weight_student_is_the_teacher() -> None:
    """A fresh student under the noise-shared sampler gives the teacher's samples on the same noise."""
    teacher = _teacher()
    noise = _noise(5, seed=13)
    assert torch.equal(noise_shared_sample(_student(teacher), SCHEDULE, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K),
                       noise_shared_sample(teacher, SCHEDULE, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K))


def test_draft_is_the_quantile_of_the_base_prediction() -> None:
    """The provisional value fed at a masked token is the sorted-quantile draw at its c of the student's own
    noise-free prediction: with the draft embedding set to a one-hot code and the MLP off, the offset at a
    masked position reads back that draw."""
    teacher = _teacher()
    student = _student(teacher).eval()
    with torch.no_grad():
        student.draft_embed.weight.copy_(torch.eye(K, 16))
    z, t, noise = _half_masked(4), torch.full((4,), 0.5), _noise(4)
    offset = student.noise_offset(z, t, noise)
    masked = z == MASK
    expected = sorted_quantile_draw(teacher(z, t)[masked], noise.category[masked])
    assert torch.equal(offset[masked][:, :K].argmax(-1), expected)
    assert not bool(offset[~masked].any())


def test_shadow_distill_resumes_exactly(tmp_path: Path) -> None:
    """A shadow run stopped mid-round and resumed ends with the same weights as an uninterrupted one (the batch,
    noise and rollout of step k depend only on (seed, k))."""
    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    full = distill(_shadow_config(teacher, tmp_path / "full"))
    distill(_shadow_config(teacher, tmp_path / "split", max_steps=3))
    resumed = distill(_shadow_config(teacher, tmp_path / "split", resume=True))
    assert resumed["complete"] and resumed["teacher_forward_passes"] == full["teacher_forward_passes"]
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    for name in a:
        if name.startswith(("model.", "ema.", "teacher.")):
            assert torch.equal(a[name], b[name]), name


def test_cli_shadow_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mcd distill --method shadow` arguments reach the config; a bad sub-step count fails before any work,
    naming the argument; `mcd eval` on the student samples it with the noise-shared sampler without flags."""
    from sampler.cli import main
    from sampler.run.eval import EvalConfig, evaluate_checkpoint

    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    common = ["distill", "--teacher", str(teacher), "--method", "shadow", "--coupling", "uniform", "--start-steps", "2",
              "--target-steps", "2", "--steps-per-round", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "bad"), "--shadow-substeps", "0"]) == 2
    assert "--shadow-substeps" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(common + ["--out", str(tmp_path / "ok"), "--shadow-substeps", "3", "--no-shadow-draft"]) == 0
    _, meta = load_checkpoint(tmp_path / "ok")
    assert meta["distill"]["config"]["shadow_substeps"] == 3 and meta["shadow"]["config"]["draft"] is False
    report = evaluate_checkpoint(EvalConfig(ckpt=str(tmp_path / "ok"), steps=[2], num=4, elbo_num=4, device="cpu"))
    assert report["sampler"].startswith("noise_shared")
    student, _ = load_shadow_student(tmp_path / "ok")
    samples = shadow_sample(student, SCHEDULE, num_steps=2, num_samples=4, seq_len=12, seed=0)
    from sampler.data import get_source, sample_quality

    expected = sample_quality(samples, get_source("exact", seed=0, seq_len=12))["nll_per_token"]
    assert report["results"][0]["nll_per_token"] == pytest.approx(expected, abs=1e-12)


def test_design_b_trains_on_the_endpoint_and_samples_by_argmax(tmp_path: Path) -> None:
    """--shadow-target hard: cross-entropy on the revealed tokens only (no soft terms), the checkpoint records the
    argmax draw, and its samples never read c for the draw: with the noise input off (ablation "zero") changing
    every category noise leaves the samples unchanged (planted bug caught: drawing at c from the student's own
    distribution, i.e. using c twice)."""
    from sampler.train.runtime import read_metrics

    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    distill(_shadow_config(teacher, tmp_path / "hard", shadow_target="hard"))
    records = [r for r in read_metrics(tmp_path / "hard" / "metrics.jsonl") if "loss" in r]
    assert all(r["div_tokens"] == 0 for r in records) and sum(r["ce_tokens"] for r in records) > 0
    _, meta = load_checkpoint(tmp_path / "hard")
    assert meta["shadow"]["draw"] == "argmax"
    student, _ = load_shadow_student(tmp_path / "hard")
    set_ablation(student, "zero")
    schedule = SCHEDULE
    noise = sample_shadow_noise(6, 12, schedule, student.config.vocab_size, student.mask_id, torch.Generator().manual_seed(3))
    flipped = ShadowNoise(noise.reveal, 1.0 - noise.category, noise.method, noise.vocab_size)
    from sampler.shadow.student import ArgmaxShadowDenoiser

    greedy = ArgmaxShadowDenoiser(student)
    a = noise_shared_sample(greedy, schedule, num_steps=3, noise=noise, mask_id=student.mask_id, vocab_size=student.config.vocab_size)
    b = noise_shared_sample(greedy, schedule, num_steps=3, noise=flipped, mask_id=student.mask_id, vocab_size=student.config.vocab_size)
    assert torch.equal(a, b)
    z, t = torch.full((6, 12), student.mask_id), torch.ones(6)
    out = greedy(z, t, noise=noise)
    assert torch.equal(out.argmax(-1), student(z, t, noise=noise).argmax(-1)) and bool((out.exp().sum(-1) == 1).all())
