"""Nothing lost, nothing silently wrong (issue 12): run-directory ownership, checkpoint digests over the
metadata, resuming with something different, metrics after a resume, bad integers, output paths checked
before any work, impossible sizes, file modes.

The lock tests start real second processes (subprocess), never mocks: the first process trains (or
benchmarks) in RUN, the second is this test process calling the CLI on the same RUN.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from sampler.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, tensor_digest
from sampler.cli import main
from sampler.train import TrainConfig, TrainingStopped, train
from sampler.train.distill import DistillConfig, distill
from teacher_fixtures import make_teacher
from teacher_fixtures import strict_json_loads

REPO = Path(__file__).resolve().parents[1]
TRAIN_FAST = ["--seq-len", "16", "--batch-size", "4", "--no-progress", "--device", "cpu"]


def run_cli(args: list[str]) -> int:
    """main(args)'s exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code)


def spawn_cli(args: list[str]) -> subprocess.Popen:
    """`python -m sampler.cli ARGS` as a separate process on this worktree's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sampler.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until `path` exists (the first process is at work); fails if that process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"first process exited ({proc.returncode}) early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()  # SIGKILL: the OS releases its flock with it
    proc.wait(timeout=60)
    proc.stderr.close()


# --------------------------------------------------------------------------- 1. one process per run directory


def test_second_train_on_a_run_directory_fails_naming_the_holder_and_a_dead_holder_does_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    first = spawn_cli(["train", "--out", run, "--steps", "1000000", "--save-every", "1000000", "--log-every", "1", *TRAIN_FAST])
    try:
        wait_for_file(run / "metrics.jsonl", first)
        started = time.monotonic()
        assert run_cli(["train", "--out", run, "--steps", "2", *TRAIN_FAST]) == 2
        assert time.monotonic() - started < 30  # at once, not after training
        err = capsys.readouterr().err
        assert f"pid {first.pid}" in err and "train" in err and "in use" in err
        assert not (run / "checkpoint.safetensors").exists()  # the second process wrote nothing
    finally:
        stop(first)
    # the holder died by SIGKILL: its lock file is still there, but the OS released the lock
    assert (run / ".lock").exists()
    assert run_cli(["train", "--out", run, "--steps", "2", *TRAIN_FAST]) == 0
    assert load_checkpoint(run)[1]["step"] == 2


def test_second_distill_with_another_seed_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    common = ["distill", "--teacher", teacher, "--out", out, "--start-steps", "4", "--target-steps", "2",
              "--batch-size", "4", "--no-progress", "--device", "cpu", "--log-every", "1"]
    first = spawn_cli([*common, "--seed", "0", "--steps-per-round", "1000000", "--save-every", "1000000"])
    try:
        wait_for_file(out / "metrics.jsonl", first)
        assert run_cli([*common, "--seed", "1", "--steps-per-round", "2"]) == 2
        err = capsys.readouterr().err
        assert f"pid {first.pid}" in err and "distill" in err
        assert not (out / "checkpoint.safetensors").exists()
    finally:
        stop(first)


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
def test_second_bench_distill_on_one_out_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    first = spawn_cli(["bench-distill", "--out", out, "--smoke", "--no-progress"])
    try:
        wait_for_file(out / "teacher" / "metrics.jsonl", first)
        started = time.monotonic()
        assert run_cli(["bench-distill", "--out", out, "--smoke", "--no-progress"]) == 2
        assert time.monotonic() - started < 30
        err = capsys.readouterr().err
        assert f"pid {first.pid}" in err and "bench-distill" in err
    finally:
        stop(first)


# --------------------------------------------------------------------------- 2. the digest covers the metadata


def _tensors() -> dict[str, torch.Tensor]:
    return {"model.w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "model.b": torch.ones(3)}


def _flip(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def test_a_changed_character_in_the_metadata_is_refused(tmp_path: Path) -> None:
    """The issue's case: the recorded source seed 0 -> 1 in the header; load must refuse, not score against the wrong source."""
    save_checkpoint(tmp_path, _tensors(), {"source": {"name": "exact", "seed": 0}, "step": 7})
    assert load_checkpoint(tmp_path)[1]["source"]["seed"] == 0
    _flip(tmp_path / "checkpoint.safetensors", b'\\"seed\\": 0', b'\\"seed\\": 1')
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(tmp_path)


def test_claiming_the_old_format_does_not_bypass_the_digest(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _tensors(), {"step": 7})
    _flip(tmp_path / "checkpoint.safetensors", b'\\"format_version\\": 2', b'\\"format_version\\": 1')
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(tmp_path)


def test_format_version_1_checkpoints_still_load_without_metadata_protection(tmp_path: Path) -> None:
    """A file as written before the digest covered the metadata (digest over the tensors only) loads;
    as documented, its metadata is unprotected, and its tensors still are."""
    from safetensors.torch import save

    tensors = _tensors()
    meta_json = json.dumps({"step": 7, "source": {"seed": 0}, "format_version": 1}, sort_keys=True)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(save(tensors, metadata={"meta": meta_json, "digest": tensor_digest(tensors)}))
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 7 and torch.equal(loaded["model.w"], tensors["model.w"])
    _flip(path, b'\\"seed\\": 0', b'\\"seed\\": 1')
    assert load_checkpoint(tmp_path)[1]["source"]["seed"] == 1  # unprotected, as documented
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- 3. resuming with something different

SEQ_LEN = 16


def tiny_config(out: Path, **overrides) -> TrainConfig:
    base = dict(out=str(out), seq_len=SEQ_LEN, max_steps=4, batch_size=8, warmup=2, lr=3e-3, save_every=4,
                eval_every=1000, eval_batches=1, log_every=1, progress=False, device="cpu")
    return TrainConfig(**{**base, **overrides})


def tiny_distill(teacher: Path, out: Path, **overrides) -> DistillConfig:
    base = dict(teacher=str(teacher), out=str(out), start_steps=4, target_steps=2, steps_per_round=3,
                batch_size=4, save_every=2, log_every=1, device="cpu", progress=False, warmup=2)
    return DistillConfig(**{**base, **overrides})


def test_distill_refuses_other_teacher_weights_of_the_same_shape(tmp_path: Path) -> None:
    first = make_teacher(tmp_path / "t1", seed=0)
    out = tmp_path / "student"
    distill(tiny_distill(first, out, max_steps=2))
    before = (out / "checkpoint.safetensors").read_bytes()
    other = make_teacher(tmp_path / "t2", seed=1)  # same shape, other weights
    with pytest.raises(ValueError, match="other teacher weights"):
        distill(tiny_distill(other, out, resume=True))
    assert (out / "checkpoint.safetensors").read_bytes() == before
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)  # the same teacher in another directory resumes
    assert distill(tiny_distill(moved, out, resume=True))["complete"]


def test_train_resume_refuses_changed_settings_listing_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, seed=2))
    before = (run / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError) as refused:
        train(tiny_config(run, max_steps=8, resume=True, lr=1e-2, batch_size=4, seed=3))
    message = str(refused.value)
    for field in ("lr", "batch_size", "seed"):
        assert f"{field}: run" in message
    assert "--allow-changed" in message
    assert (run / "checkpoint.safetensors").read_bytes() == before


def test_allowed_change_is_recorded_and_the_provenance_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--out", run, "--steps", "4", "--save-every", "4", "--lr", "0.003", *TRAIN_FAST]
    assert run_cli(args) == 0
    resumed = ["train", "--out", run, "--steps", "6", "--save-every", "4", "--lr", "0.01", "--resume", *TRAIN_FAST]
    assert run_cli(resumed) == 2
    assert run_cli([*resumed, "--allow-changed", "lr"]) == 0
    meta = load_checkpoint(run)[1]
    assert meta["step"] == 6
    assert meta["train_config"]["lr"] == 0.003 and meta["train_config"]["max_steps"] == 4  # as started
    assert meta["resumes"] == [{"step": 4, "changed": {"lr": [0.003, 0.01]}}]
    # the run now trains at lr 0.01: a further resume at 0.01 needs no flag, and records no change
    assert run_cli([a if a != "6" else "8" for a in resumed]) == 0
    assert load_checkpoint(run)[1]["resumes"][-1] == {"step": 6, "changed": {}}
    with pytest.raises(ValueError, match="allow_changed"):
        tiny_config(run, allow_changed=("size",)).validate()


def test_resume_without_a_seed_uses_the_runs_seed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, seed=3))
    train(tiny_config(run, max_steps=8, resume=True))  # no seed given
    assert load_checkpoint(run)[1]["train_config"]["seed"] == 3
    fresh = tmp_path / "fresh"
    train(tiny_config(fresh, max_steps=1))
    assert load_checkpoint(fresh)[1]["train_config"]["seed"] == 0


def test_distill_resume_without_a_seed_continues_the_runs_seed_exactly(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    straight = distill(tiny_distill(teacher, tmp_path / "straight", seed=2))
    distill(tiny_distill(teacher, tmp_path / "split", seed=2, max_steps=4))
    resumed = distill(tiny_distill(teacher, tmp_path / "split", resume=True))  # no seed given
    assert resumed["complete"] and straight["complete"]
    a, meta = load_checkpoint(tmp_path / "straight")
    b, meta_b = load_checkpoint(tmp_path / "split")
    assert meta_b["distill"]["config"]["seed"] == 2
    assert [k for k in a if k.startswith(("model.", "ema.", "optim.")) and not torch.equal(a[k], b[k])] == []


# --------------------------------------------------------------------------- 4. metrics.jsonl after a resume


def _steps(run: Path, key: str = "loss", event: str | None = None) -> list[int]:
    """The steps of the records holding `key` and of the given event kind (None: step records, no event)."""
    records = [strict_json_loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if key in r and r.get("event") == event]


def test_teacher_metrics_hold_each_step_once_after_kill_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def kill(step: int) -> None:
        if step == 6:
            raise TrainingStopped

    with pytest.raises(TrainingStopped):
        train(tiny_config(run, max_steps=8, save_every=4, eval_every=4), step_callback=kill)
    assert load_checkpoint(run)[1]["step"] == 4 and _steps(run) == [1, 2, 3, 4, 5, 6]
    train(tiny_config(run, max_steps=8, save_every=4, eval_every=4, resume=True))
    assert _steps(run) == list(range(1, 9))
    assert _steps(run, "eval_elbo") == [4, 8]  # the eval record of the checkpoint's step stays


def test_distill_metrics_after_a_kill_past_a_checkpoint(tmp_path: Path) -> None:
    """A kill after the save at step 3 that had already logged the next round's start and step 4:
    on resume those lines go, and every step and round appears once."""
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    distill(tiny_distill(teacher, out, max_steps=3, save_every=3))
    records = [strict_json_loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss" in r][-1]
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "round", "step": 3, "round": 1, "sampling_steps": 2}) + "\n")
        f.write(json.dumps({**last, "step": 4}) + "\n")
        f.write('{"step": 5, "lo')  # torn by the kill
    assert distill(tiny_distill(teacher, out, save_every=3, resume=True))["complete"]
    assert _steps(out) == [1, 2, 3, 4, 5, 6]
    assert _steps(out, "round", event="round") == [0, 3]


# --------------------------------------------------------------------------- 5. silently accepted values


@pytest.fixture
def teacher_run(tmp_path: Path) -> Path:
    return make_teacher(tmp_path / "teacher", seq_len=8)


BAD_VALUES = [
    (["sample", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--seq-len", "0"], "--seq-len"),
    (["sample", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--threads", "0"], "--threads"),
    (["sample", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--seed", "-1"], "--seed"),
    (["eval", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--elbo-num", "2", "--threads", "0"], "--threads"),
    (["eval", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--elbo-num", "2", "--seed", "-1"], "--seed"),
    (["distill", "--teacher", "{teacher}", "--out", "{out}", "--steps-per-round", "1", "--threads", "0"], "--threads"),
    (["distill", "--teacher", "{teacher}", "--out", "{out}", "--steps-per-round", "1", "--seed", "-1"], "--seed"),
    (["train", "--out", "{out}", "--steps", "1", *TRAIN_FAST, "--threads", "0"], "--threads"),
    (["train", "--out", "{out}", "--steps", "1", *TRAIN_FAST, "--seed", "-1"], "--seed"),
    (["bench-distill", "--out", "{out}", "--smoke", "--no-progress", "--threads", "0"], "--threads"),
    (["bench-distill", "--out", "{out}", "--smoke", "--no-progress", "--seeds", "0,-1"], "--seeds"),
    (["verify", "--out", "{out}", "--quick", "--claims", "1", "--no-mutants", "--threads", "0"], "--threads"),
    (["verify", "--out", "{out}", "--quick", "--claims", "1", "--no-mutants", "--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("args,flag", BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_VALUES])
def test_bad_integers_are_refused_by_name_in_every_subcommand(
    args: list[str], flag: str, teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    before = sorted(p.name for p in teacher_run.iterdir())
    status = run_cli([a.format(teacher=teacher_run, out=out) for a in args])
    assert status == 2
    assert flag in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in teacher_run.iterdir()) == before  # no work, no output


@pytest.mark.parametrize("command", ["train", "distill"])
def test_compile_on_the_cpu_is_refused(command: str, teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = (["train", "--out", out, "--steps", "1", *TRAIN_FAST] if command == "train" else
            ["distill", "--teacher", teacher_run, "--out", out, "--steps-per-round", "1", "--device", "cpu", "--no-progress"])
    assert run_cli([*args, "--compile", "--device", "cpu"]) == 2
    assert "--compile" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- 6. output paths checked before any work


@pytest.fixture
def unwritable_dir(tmp_path: Path):
    """A directory this process cannot create files in: chmod 0555 for a normal user; root ignores modes,
    so for root /sys (sysfs refuses new files even to root) when that holds here."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        yield locked
        locked.chmod(0o755)
        return
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        yield Path("/sys")
        return
    os.close(fd)
    os.unlink(probe)
    pytest.skip("running as root and /sys is writable here: no unwritable directory to test with")


UNWRITABLE = [
    ["train", "--out", "{u}/run", "--steps", "1", *TRAIN_FAST],
    ["distill", "--teacher", "{teacher}", "--out", "{u}/student", "--steps-per-round", "1", "--device", "cpu", "--no-progress"],
    ["sample", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--out", "{u}/samples.jsonl"],
    ["eval", "--ckpt", "{teacher}", "--steps", "2", "--num", "2", "--elbo-num", "2", "--out", "{u}/eval.json"],
    ["bench-distill", "--out", "{u}/bench", "--smoke", "--no-progress"],
    ["verify", "--out", "{u}/report", "--quick", "--claims", "1", "--no-mutants"],
]


@pytest.mark.parametrize("args", UNWRITABLE, ids=[a[0] for a in UNWRITABLE])
def test_an_unwritable_output_is_refused_before_any_work(
    args: list[str], unwritable_dir: Path, teacher_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert run_cli([a.format(u=unwritable_dir, teacher=teacher_run) for a in args]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not writable" in err
    assert time.monotonic() - started < 20


def test_verify_out_naming_a_file_fails_before_the_suite_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import proofs_checks.suite as suite

    calls = []
    monkeypatch.setattr(suite, "run_suite", lambda **kwargs: calls.append(kwargs))
    existing = tmp_path / "report.txt"
    existing.write_text("keep me\n")
    assert run_cli(["verify", "--out", existing, "--quick"]) == 2
    assert calls == [] and "--out" in capsys.readouterr().err
    assert existing.read_text() == "keep me\n"


def test_sample_out_naming_a_directory_fails_first_and_leaves_no_temporary_file(
    teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "samples"
    target.mkdir()
    assert run_cli(["sample", "--ckpt", teacher_run, "--steps", "2", "--num", "2", "--out", target]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a directory" in err
    assert [p.name for p in tmp_path.rglob("*.tmp")] == [] and list(target.iterdir()) == []


def test_eval_out_naming_a_directory_fails_first(teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["eval", "--ckpt", teacher_run, "--steps", "2", "--num", "2", "--elbo-num", "2", "--out", tmp_path]) == 2
    assert "is a directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- 7. impossible values, early


@pytest.mark.parametrize("args,names", [
    (["--lr", "inf"], ["lr"]),
    (["--weight-decay", "inf"], ["weight_decay"]),
    (["--seq-len", "100000", "--batch-size", "1024"], ["--batch-size", "--seq-len"]),
    (["--seq-len", "16", "--batch-size", str(10**9)], ["--batch-size", "--seq-len"]),
])
def test_impossible_training_values_fail_early_without_a_run_directory(
    args: list[str], names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    started = time.monotonic()
    assert run_cli(["train", "--out", run, "--steps", "1", "--no-progress", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in names), err
    assert not run.exists()
    assert time.monotonic() - started < 30


def test_memory_estimate_is_a_lower_bound_that_admits_the_default_run() -> None:
    """The estimate must not refuse what runs: the default teacher (batch 32, L 64, tiny) needs a few MB
    by the formula; 4·B·L·(24·d·layers + 4·V) is checked by hand for one case."""
    from sampler.model import DenoiserConfig
    from sampler.train.runtime import training_memory_bytes

    config = DenoiserConfig.preset("tiny", 10, 64)
    activations = 4 * 32 * 64 * (24 * 64 * 4 + 4 * 10)
    params = 12 * 64 * 64 * 4 + 2 * 11 * 64
    assert training_memory_bytes(config, 32, 64) == 20 * params + activations
    assert training_memory_bytes(config, 32, 64) < 2**30


# --------------------------------------------------------------------------- 8. output files follow the umask


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_sample_and_eval_files_follow_the_umask(umask: int, mode: int, teacher_run: Path, tmp_path: Path) -> None:
    from sampler.run.eval import write_json

    old = os.umask(umask)
    try:
        samples = tmp_path / "samples.jsonl"
        assert run_cli(["sample", "--ckpt", teacher_run, "--steps", "2", "--num", "2", "--out", samples]) == 0
        report = tmp_path / "eval.json"
        write_json(report, {"a": 1})
    finally:
        os.umask(old)
    assert (samples.stat().st_mode & 0o777, report.stat().st_mode & 0o777) == (mode, mode)
