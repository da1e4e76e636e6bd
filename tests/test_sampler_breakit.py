"""Nothing silently wrong, nothing outside the run directory: one test per defect of a break-it pass
(symlinked lock files, stale temporaries, untrusted checkpoint metadata, prompts rewritten instead of
refused, work done before a refusal, tracebacks where a named error is due, unbounded costs).

Real objects throughout: a real symlink, a real second process, crafted checkpoints re-sealed with the
project's own `save_checkpoint`, a full disk simulated by making the write itself fail with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sampler.checkpoint import load_checkpoint, save_checkpoint
from sampler.cli import main
from sampler.rundir import run_dir_lock
from teacher_fixtures import make_teacher

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list) -> int:
    """main(args)'s exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code)


def reseal(run: Path, **meta_changes) -> Path:
    """RUN's checkpoint with `meta_changes` applied to its metadata, re-sealed by save_checkpoint (a valid
    digest: the digest is a checksum, so crafted metadata passes it)."""
    tensors, meta = load_checkpoint(run)
    meta.pop("format_version", None)
    save_checkpoint(run, tensors, {**meta, **meta_changes})
    return run


# --------------------------------------------------------------------------- lock and temporary files


def test_a_symlinked_lock_is_refused_and_its_target_left_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("precious\n")
    (run / ".lock").symlink_to(victim)
    assert run_cli(["train", "--out", run, "--steps", "1", "--seq-len", "8", "--batch-size", "2", "--no-progress", "--device", "cpu"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"
    assert not (run / "checkpoint.safetensors").exists()


def test_a_lock_taken_by_a_second_process_still_excludes_this_one(tmp_path: Path) -> None:
    """O_NOFOLLOW changed how the lock is opened: a real second process holding it still excludes us."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from sampler.rundir import run_dir_lock\n"
         "with run_dir_lock(sys.argv[1], 'holder'):\n print('held', flush=True); time.sleep(60)", str(run)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"pid {holder.pid}"):
            with run_dir_lock(run):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stdout.close()


def test_temporaries_left_by_a_killed_writer_are_removed_on_the_next_open(tmp_path: Path) -> None:
    run = make_teacher(tmp_path / "run")
    stale = [run / ".config.json.abc123.tmp", run / ".checkpoint.safetensors.def456.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    kept = run / "notes.tmp"  # not an atomic-write temporary: left alone
    kept.write_text("mine")
    with run_dir_lock(run):
        pass
    assert not any(path.exists() for path in stale)
    assert kept.read_text() == "mine"


# --------------------------------------------------------------------------- theory and duality inputs


def test_a_vocabulary_size_beyond_float64_is_refused_by_name() -> None:
    import theory

    with pytest.raises(ValueError, match="vocab_size must be a real number within float64"):
        theory.masked_alpha(1.0, 10**400)
    assert 0.0 <= theory.masked_alpha(1.0, 10**300) <= 1.0  # large but representable: still a value


@pytest.mark.parametrize("which", ["nu", "vocab_size"])
def test_meta_tensors_into_masked_alpha_are_refused_by_name(which: str) -> None:
    import theory

    meta = torch.zeros(3, device="meta")
    args = {"nu": (meta, 10), "vocab_size": (1.0, meta + 10)}[which]
    with pytest.raises(ValueError, match=f"{which} is a tensor on the meta device"):
        theory.masked_alpha(*args)


@pytest.mark.parametrize("which", ["x0", "noise", "t"])
def test_meta_tensors_into_the_coupling_mask_are_refused_by_name(which: str) -> None:
    from duality.coupling import MaskedCoupling
    from theory.schedules import LogLinearSchedule

    coupling = MaskedCoupling(LogLinearSchedule(), vocab_size=5, mask_id=5)
    x0 = torch.zeros(2, 3, dtype=torch.long)
    args = {"x0": x0, "noise": coupling.sample_noise(x0), "t": torch.full((2,), 0.5)}
    args[which] = args[which].to("meta")
    with pytest.raises(ValueError, match=f"{which} is a tensor on the meta device"):
        coupling.mask(args["x0"], args["noise"], args["t"])


# --------------------------------------------------------------------------- ModuleDenoiser inputs


def _module_denoiser():
    from sampler.adapter import ModuleDenoiser

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(9, 4), torch.nn.Linear(4, 9))  # K = 8, mask id 8
    return ModuleDenoiser(net, vocab_size=8, seq_len=5, takes_time=False)


@pytest.mark.parametrize("bad_id", [40, 9, -5])
def test_module_denoiser_refuses_ids_outside_the_vocabulary_and_mask(bad_id: int) -> None:
    denoiser = _module_denoiser()
    z = torch.tensor([[0, 1, 8, 7, 2], [3, 3, bad_id, 8, 8]])
    with pytest.raises(ValueError, match=f"z holds id {bad_id}, neither a real token 0..7 nor mask_id=8"):
        denoiser(z, torch.full((2,), 0.5))


def test_module_denoiser_refuses_float_z_and_accepts_every_valid_id() -> None:
    from sampler.adapter import _check_denoiser_input

    denoiser = _module_denoiser()
    # called directly: under the tests' jaxtyping hook the forward's Int annotation would answer first
    with pytest.raises(ValueError, match="z must be an integer tensor"):
        _check_denoiser_input(torch.zeros(2, 5), torch.full((2,), 0.5), denoiser.config)
    z = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 8]])  # every real id and the mask id
    assert denoiser(z, torch.full((2,), 0.5)).shape == (2, 5, 8)


@pytest.mark.parametrize("t", [torch.full((3,), 0.5), torch.full((2, 1), 0.5), torch.tensor(0.5), 0.5, torch.ones(2, dtype=torch.long)])
def test_module_denoiser_refuses_a_time_of_the_wrong_shape_or_kind(t) -> None:
    from sampler.adapter import _check_denoiser_input

    denoiser = _module_denoiser()  # the helper forward calls first (the tests' jaxtyping hook would answer first)
    with pytest.raises(ValueError, match=r"t must be a floating tensor of shape \(batch,\) = \(2,\)"):
        _check_denoiser_input(torch.zeros(2, 5, dtype=torch.long), t, denoiser.config)


# --------------------------------------------------------------------------- the text extra and the cache directory


TINY_TRAIN = ["--steps", "1", "--seq-len", "8", "--batch-size", "2", "--no-progress", "--device", "cpu"]


def test_bpe_without_the_text_extra_is_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "f.txt"
    corpus.write_text("the cat sat on the mat. " * 50)
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` now raises ImportError
    assert run_cli(["train", "--data", f"text:{corpus}?tokenizer=bpe", "--out", tmp_path / "run", *TINY_TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "latent-shadows[text]"' in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("below", [False, True])
def test_a_cache_variable_naming_a_file_is_a_named_error(
    below: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(afile / "sub" if below else afile))
    corpus = tmp_path / "f.txt"
    corpus.write_text("the cat sat on the mat. " * 50)
    assert run_cli(["train", "--data", f"text:{corpus}?tokenizer=bpe", "--out", tmp_path / "run", *TINY_TRAIN]) == 2
    assert run_cli(["fetch", "shakespeare"]) == 2
    err = capsys.readouterr().err
    assert err.count("LATENT_SHADOWS_CACHE=") == 2 and "is a file" in err and "Traceback" not in err
    assert afile.read_text() == "not a directory"


# --------------------------------------------------------------------------- distillation settings refused before work


DISTILL_FAST = ["--start-steps", "4", "--target-steps", "2", "--steps-per-round", "2", "--batch-size", "4",
                "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("flag", ["--temperature-start", "--temperature-floor"])
def test_a_temperature_whose_tempered_teacher_overflows_is_refused_before_work(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sampler.train.distill import MIN_TEACHER_TEMPERATURE, teacher_temperature

    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert run_cli(["distill", "--teacher", teacher, "--out", out, *DISTILL_FAST, flag, "1e-37"]) == 2
    assert f"{flag[2:].replace('-', '_')} must be a finite number >= 0.01" in capsys.readouterr().err
    assert not out.exists()
    assert teacher_temperature(0, MIN_TEACHER_TEMPERATURE, 0.0, MIN_TEACHER_TEMPERATURE) == MIN_TEACHER_TEMPERATURE


# --------------------------------------------------------------------------- unbounded costs


def test_the_step_grid_is_built_lazily_with_the_same_values() -> None:
    """A huge step count costs no memory up front: 5 million steps over a fully pinned batch (nothing to reveal,
    so the sampler stops at once) allocate well under a megabyte of Python objects (the full grid as a list
    took ~160 MB); the lazy grid equals time_grid's values exactly."""
    import tracemalloc

    from sampler.sampling import StepTimes, ancestral_sample, time_grid
    from theory.schedules import LogLinearSchedule

    for n in (1, 3, 64, 1000, 99991):
        assert list(StepTimes(n)) == time_grid(n).tolist()

    def denoiser(z, t):  # never called: every position is pinned
        raise AssertionError("called")

    fixed = torch.zeros(2, 4, dtype=torch.long)
    tracemalloc.start()
    try:
        out = ancestral_sample(denoiser, LogLinearSchedule(), num_steps=5_000_000, num_samples=2, seq_len=4, mask_id=3,
                               vocab_size=3, fixed=fixed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(out, fixed) and peak < 1_000_000


# --------------------------------------------------------------------------- sampler.sample arguments


def _sample_with(**overrides):
    """sampler.sample without the tests' jaxtyping/beartype hook (which would answer `seed='a'` first, as no
    user's installation does)."""
    import inspect

    import sampler.api
    from theory.schedules import LogLinearSchedule

    kwargs = dict(num_samples=2, num_steps=4, seed=0)
    schedule = overrides.pop("schedule", LogLinearSchedule())
    kwargs.update(overrides)
    return inspect.unwrap(sampler.api.sample)(_module_denoiser(), schedule, **kwargs)


@pytest.mark.parametrize("overrides, message", [
    ({"prefix": [[1, 2], [3, 4]]}, r"prefix must have shape .*\(length,\), got shape \(2, 2\)"),
    ({"prefix": [3.7, 1.2]}, "prefix must hold integer token ids"),
    ({"prefix": [True, False]}, "prefix must hold integer token ids"),
    ({"infill": [1.5, 8, 8, 8, 8]}, "infill must hold integer token ids"),
    ({"seed": "a"}, "seed must be an integer in 0..2"),
    ({"seed": 2**70}, "seed must be an integer in 0..2"),
    ({"seed": -1}, "seed must be an integer in 0..2"),
    ({"seed": 1.0}, "seed must be an integer in 0..2"),
    ({"schedule": None}, "schedule must be a masking schedule"),
    ({"device": "meta"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
])
def test_sample_refuses_bad_arguments_by_name_instead_of_rewriting_them(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _sample_with(**overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_sample_on_cuda_without_cuda_is_a_named_error() -> None:
    with pytest.raises(ValueError, match="device='cuda' asked for but CUDA is not available"):
        _sample_with(device="cuda")


def test_valid_prompts_and_seeds_still_sample() -> None:
    x = _sample_with(prefix=[3, 1], seed=2**63 - 1)
    assert x.shape == (2, 5) and x[:, :2].tolist() == [[3, 1], [3, 1]]
    assert _sample_with(prefix=[]).shape == (2, 5) and _sample_with(prefix=4)[:, 0].tolist() == [4, 4]
    y = _sample_with(infill=torch.tensor([8, 1, 8, 8, 2], dtype=torch.int32))
    assert y[:, 1].tolist() == [1, 1] and y[:, 4].tolist() == [2, 2]


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_the_cli_and_the_library_share_one_seed_rule(seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.sampling import MAX_SEED, check_seed

    teacher = make_teacher(tmp_path / "teacher")
    assert run_cli(["sample", "--ckpt", teacher, "--seed", seed, "--num", "1", "--steps", "2", "--out", tmp_path / "s.jsonl"]) == 2
    assert "--seed: must be an integer in 0..2**63 - 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be an integer in 0..2"):
        check_seed(int(seed))
    assert check_seed(MAX_SEED) == MAX_SEED


# --------------------------------------------------------------------------- the design-B shadow student and temperature


def test_a_hard_target_shadow_student_refuses_a_temperature_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.train.distill import DistillConfig, distill

    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    student = tmp_path / "hard"
    distill(DistillConfig(teacher=str(teacher), out=str(student), method="shadow", coupling="uniform", start_steps=4,
                          target_steps=2, steps_per_round=2, shadow_substeps=2, batch_size=4, save_every=2, log_every=1,
                          device="cpu", progress=False, warmup=1, temperature=False, shadow_target="hard"))
    out = tmp_path / "s.jsonl"
    assert run_cli(["sample", "--ckpt", student, "--temperature", "0.2", "--num", "2", "--steps", "2", "--out", out]) == 2
    assert "temperature=0.2 is not available for a hard-target (design B) shadow student" in capsys.readouterr().err
    assert not out.exists()
    report = tmp_path / "eval.json"
    assert run_cli(["eval", "--ckpt", student, "--temperatures", "1", "0.5", "--num", "2", "--steps", "2", "--out", report]) == 2
    assert "--temperatures=0.5 is not available" in capsys.readouterr().err
    assert run_cli(["sample", "--ckpt", student, "--num", "2", "--steps", "2", "--out", out]) == 0  # temperature 1 still samples


# --------------------------------------------------------------------------- flags that would be silently ignored


@pytest.mark.parametrize("flag", [["--shadow-head", "causal"], ["--shadow-target", "hard"]])
def test_shadow_only_flags_with_the_mcd_method_are_refused(flag: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert run_cli(["distill", "--teacher", teacher, "--out", out, "--method", "mcd", *flag, *DISTILL_FAST]) == 2
    assert f"{flag[0][2:].replace('-', '_')}={flag[1]!r} applies to method 'shadow' only" in capsys.readouterr().err
    assert not out.exists()


def test_a_resume_asking_for_fewer_steps_than_done_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    fast = ["--seq-len", "8", "--batch-size", "2", "--no-progress", "--device", "cpu", "--save-every", "1"]
    assert run_cli(["train", "--out", run, "--steps", "3", *fast]) == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    assert run_cli(["train", "--out", run, "--resume", "--steps", "2", *fast]) == 2
    assert "below the step 3" in capsys.readouterr().err
    assert (run / "checkpoint.safetensors").read_bytes() == before  # no `resumes` entry appended
    assert run_cli(["train", "--out", run, "--resume", "--steps", "3", *fast]) == 0  # equal: nothing to do, allowed

    teacher = make_teacher(tmp_path / "teacher")
    student = tmp_path / "student"
    assert run_cli(["distill", "--teacher", teacher, "--out", student, *DISTILL_FAST]) == 0
    before = (student / "checkpoint.safetensors").read_bytes()
    assert run_cli(["distill", "--teacher", teacher, "--out", student, *DISTILL_FAST, "--steps", "1", "--resume"]) == 2
    assert "below the step 4" in capsys.readouterr().err
    assert (student / "checkpoint.safetensors").read_bytes() == before


# --------------------------------------------------------------------------- crafted and wrong-kind teachers


@pytest.mark.parametrize("source", ["exact", ["exact"], {"seed": 0}])
def test_distill_names_crafted_source_metadata(source, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = reseal(make_teacher(tmp_path / "teacher"), source=source)
    out = tmp_path / "student"
    assert run_cli(["distill", "--teacher", teacher, "--out", out, *DISTILL_FAST]) == 2
    assert "malformed checkpoint: meta['source']" in capsys.readouterr().err
    assert not out.exists()


def test_distill_from_a_shadow_student_is_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    student = tmp_path / "shadow"
    assert run_cli(["distill", "--teacher", teacher, "--out", student, "--method", "shadow", "--coupling", "uniform",
                    *DISTILL_FAST]) == 0
    out = tmp_path / "again"
    assert run_cli(["distill", "--teacher", student, "--out", out, *DISTILL_FAST]) == 2
    assert f"teacher={str(student)!r} is a shadow student" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- a full disk


def _disk_fills_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file opened through os.fdopen for writing (atomic_write_bytes' temporary) takes half its data,
    then the device is full (ENOSPC), as a real full disk answers a write."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        return FullDisk(f) if "w" in mode else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_a_full_disk_during_a_checkpoint_save_is_named_and_the_previous_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    fast = ["--seq-len", "8", "--batch-size", "2", "--no-progress", "--device", "cpu", "--save-every", "1"]
    assert run_cli(["train", "--out", run, "--steps", "2", *fast]) == 0
    before = (run / "checkpoint.safetensors").read_bytes()
    capsys.readouterr()
    _disk_fills_up(monkeypatch)
    assert run_cli(["train", "--out", run, "--resume", "--steps", "4", *fast]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and "the previous file there is intact" in err and "Traceback" not in err
    monkeypatch.undo()
    assert (run / "checkpoint.safetensors").read_bytes() == before and load_checkpoint(run)[1]["step"] == 2
    assert not list(run.glob(".*.tmp"))


def test_a_full_disk_while_writing_samples_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from sampler.checkpoint import DiskFullError

    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "s.jsonl"
    _disk_fills_up(monkeypatch)
    assert run_cli(["sample", "--ckpt", teacher, "--num", "2", "--steps", "2", "--out", out]) == 2
    assert "no space left" in capsys.readouterr().err and not out.exists()
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(teacher, {"model.w": torch.ones(3)}, {"step": 1})
    assert caught.value.errno == errno.ENOSPC and "the previous file there is intact" in str(caught.value)
    monkeypatch.undo()
    assert load_checkpoint(teacher)[1]["step"] == 0


# --------------------------------------------------------------------------- checkpoint metadata is untrusted


@pytest.mark.parametrize("stored_tokenizer", [True, False])
def test_sample_and_eval_never_read_a_corpus_named_in_the_checkpoint(
    stored_tokenizer: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crafted checkpoint (re-sealed by save_checkpoint) whose source names another file: neither mcd sample
    nor mcd eval opens it (every open of that path is recorded and must not happen); a corpus named with
    --data on the command line is read."""
    import builtins

    from teacher_fixtures import make_text_teacher

    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path / "cache"))
    run, spec = make_text_teacher(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("a file the checkpoint must not make us read\n" * 20)
    tensors, meta = load_checkpoint(run)
    changes = {"source": {**meta["source"], "spec": f"text:{secret}"}}
    if not stored_tokenizer:
        changes["tokenizer"] = None
    reseal(run, **changes)
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (opened.append(str(self)), real_open(self, *a, **k).read())[1])
    out = tmp_path / "s.jsonl"
    assert run_cli(["sample", "--ckpt", run, "--num", "2", "--steps", "2", "--device", "cpu", "--out", out]) == 0
    code = run_cli(["eval", "--ckpt", run, "--num", "2", "--steps", "2", "--evaluator", "none", "--device", "cpu",
                    "--elbo-num", "2", "--out", tmp_path / "e.json"])
    err = capsys.readouterr().err
    assert str(secret) not in opened
    if stored_tokenizer:
        assert code == 0 and "never read" in err
    else:
        assert code == 2 and "pass the corpus with --data" in err and "writing ids only" in err
    corpus = spec.split("?")[0][len("text:"):]
    opened.clear()
    assert run_cli(["eval", "--ckpt", run, "--num", "2", "--steps", "2", "--evaluator", "none", "--device", "cpu",
                    "--elbo-num", "2", "--out", tmp_path / "e2.json", "--data", spec]) == 0
    assert corpus in opened and str(secret) not in opened


# --------------------------------------------------------------------------- bench-distill


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "lr must be a positive finite number"),
    (["--teacher-lr", "0"], "teacher_lr must be a positive finite number"),
    (["--ngram-orders", "1,100"], "ngram_orders holds 100, longer than the sequences"),
    (["--batch-size", "100000000"], "needs at least"),
])
def test_bench_distill_refuses_its_whole_config_before_training_a_teacher(
    flags: list, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert run_cli(["bench-distill", "--out", out, "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # no teacher trained, no run directory


def test_a_more_training_run_of_another_teacher_is_not_reused(tmp_path: Path) -> None:
    from sampler.run.arms import ARMS, train_more
    from sampler.run.bench import BenchConfig

    teacher = tmp_path / "teacher"
    assert run_cli(["train", "--out", teacher, "--steps", "2", "--seq-len", "8", "--batch-size", "2", "--no-progress",
                    "--device", "cpu"]) == 0
    config = BenchConfig(out=str(tmp_path / "bench"), start_steps=2, target_steps=2, steps_per_round=1, batch_size=2,
                         device="cpu", progress=False)
    arm = ARMS["more-training"]
    assert train_more(arm, config, teacher, 0)["complete"]
    assert train_more(arm, config, teacher, 0)["complete"]  # the same teacher and settings: reused
    tensors, meta = load_checkpoint(teacher)
    other = {k: (v + 0.01 if v.is_floating_point() and k.startswith(("model.", "ema.")) else v) for k, v in tensors.items()}
    meta.pop("format_version")
    save_checkpoint(teacher, other, meta)  # another teacher of the same shape and step
    with pytest.raises(ValueError, match=r"cannot be reused.*teacher_weights_digest"):
        train_more(arm, config, teacher, 0)
    with pytest.raises(ValueError, match=r"cannot be reused.*lr"):
        save_checkpoint(teacher, tensors, meta)
        train_more(arm, BenchConfig(**{**config.__dict__, "lr": 1e-4}), teacher, 0)


# --------------------------------------------------------------------------- log windows across a resume


def test_a_log_window_cut_by_a_resume_is_marked_partial(tmp_path: Path) -> None:
    """Log every 4 steps, stop at step 6 (mid-window), resume to 12: the record at step 8 averages steps 7-8 only
    and says so; the others (4, the stop step 6, 12) average every step since the previous record and carry no mark."""
    from sampler.train.runtime import read_metrics

    run = tmp_path / "run"
    fast = ["--seq-len", "8", "--batch-size", "2", "--no-progress", "--device", "cpu", "--log-every", "4"]
    assert run_cli(["train", "--out", run, "--steps", "6", *fast]) == 0
    assert run_cli(["train", "--out", run, "--resume", "--steps", "12", *fast]) == 0
    records = {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}
    assert "loss_window_partial" not in records[4] and "loss_window_partial" not in records[12]
    assert "loss_window_partial" not in records[6]  # the stop step's record: all of steps 5-6 since step 4
    assert records[8]["loss_window_partial"] and records[8]["loss_window_steps"] == 2  # after the resume: steps 7-8


def test_module_denoiser_refuses_the_id_just_past_the_vocabulary_when_the_mask_id_is_elsewhere() -> None:
    """K = 8 real tokens, mask id 9 (8 output classes): id 8 is neither (an off-by-one bound would let it through)."""
    from sampler.adapter import ModuleDenoiser

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 8))
    denoiser = ModuleDenoiser(net, vocab_size=8, seq_len=5, mask_id=9, takes_time=False)
    assert denoiser(torch.tensor([[0, 7, 9, 9, 1]]), torch.full((1,), 0.5)).shape == (1, 5, 8)
    with pytest.raises(ValueError, match="z holds id 8, neither a real token 0..7 nor mask_id=9"):
        denoiser(torch.tensor([[0, 8, 9, 9, 1]]), torch.full((1,), 0.5))


def test_eval_refuses_a_corpus_for_a_run_built_without_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    assert run_cli(["eval", "--ckpt", teacher, "--num", "2", "--steps", "2", "--evaluator", "none", "--device", "cpu",
                    "--data", "text:/etc/hostname", "--out", tmp_path / "e.json"]) == 2
    assert "--data names a corpus, but this checkpoint's source is 'exact'" in capsys.readouterr().err


def test_a_directory_named_like_a_temporary_is_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".config.json.abc.tmp").mkdir(parents=True)
    with run_dir_lock(run):
        pass
    assert (run / ".config.json.abc.tmp").is_dir()


def test_bench_distill_with_a_given_teacher_checks_the_students_batch_memory_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "bench"
    assert run_cli(["bench-distill", "--teacher", teacher, "--out", out, "--no-progress", "--batch-size", "100000000"]) == 2
    assert "(arm mcd): --batch-size 100000000 with --seq-len 12 needs at least" in capsys.readouterr().err
    assert not out.exists()


def test_a_full_disk_while_appending_metrics_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from sampler.checkpoint import DiskFullError
    from sampler.train.runtime import MetricsLogger

    logger = MetricsLogger(tmp_path / "metrics.jsonl")
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(DiskFullError, match="the last checkpoint is intact"):
        logger.log({"step": 1, "loss": 2.0})
