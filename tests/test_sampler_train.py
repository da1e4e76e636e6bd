"""Teacher training: ELBO loss, learning, exact resume, atomic and validated checkpoints, bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sampler import checkpoint as ckpt
from sampler.batches import stratified_times, teacher_batch
from sampler.losses import elbo_loss, masked_nll_per_sequence
from sampler.checkpoint import CheckpointError, load_checkpoint, load_denoiser, load_schedule, save_checkpoint
from sampler.data import get_source
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.train import TrainConfig, TrainingStopped, evaluate_elbo, train
from sampler.train.runtime import (
    EMA,
    build_optimizer,
    capture_rng_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    restore_rng_state,
    warmup_lr,
)
from theory import LogLinearSchedule
from teacher_fixtures import strict_json_loads

SEQ_LEN = 16


def tiny_source(vocab_size: int = 16):
    return get_source("exact", seed=0, seq_len=SEQ_LEN, vocab_size=vocab_size)


def tiny_config(out: Path, **overrides) -> TrainConfig:
    base = dict(out=str(out), seq_len=SEQ_LEN, max_steps=12, batch_size=16, warmup=3, lr=3e-3, save_every=4,
                eval_every=1000, eval_batches=1, log_every=4, progress=False, device="cpu")
    return TrainConfig(**{**base, **overrides})


# --- batches and loss ---------------------------------------------------------------------


def test_stratified_times_are_stratified() -> None:
    t = stratified_times(8, 0.0, torch.Generator().manual_seed(3))
    # exactly one time in each interval [b/8, (b+1)/8)
    assert sorted((t * 8).floor().long().tolist()) == list(range(8))


def test_teacher_batch_masks_at_rate_alpha() -> None:
    """Masked fraction at fixed t = 0.3 is 1 − α(0.3) within 5 standard errors (false-fail rate < 1e-6)."""
    schedule = LogLinearSchedule()
    x0 = torch.randint(0, 10, (200, 100), generator=torch.Generator().manual_seed(0))
    t = torch.full((200,), 0.3, dtype=torch.float64)
    z_t, t_out = teacher_batch(x0, schedule, 10, torch.Generator().manual_seed(1), t=t)
    p = 1 - float(schedule.alpha(0.3))
    frac = float((z_t == 10).double().mean())
    assert abs(frac - p) < 5 * (p * (1 - p) / x0.numel()) ** 0.5
    assert torch.equal(z_t[z_t != 10], x0[z_t != 10])
    assert torch.equal(t_out, t)


def test_elbo_loss_is_weighted_masked_cross_entropy() -> None:
    schedule = LogLinearSchedule()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 5, (3, 4), generator=gen)
    z_t = x0.clone()
    z_t[0, 1] = z_t[2, 0] = z_t[2, 3] = 5
    log_probs = torch.log_softmax(torch.randn(3, 4, 5, generator=gen), -1)
    t = torch.tensor([0.2, 0.5, 0.8])
    nll = masked_nll_per_sequence(log_probs, x0, z_t, 5)
    expected = [-log_probs[0, 1, x0[0, 1]], 0.0, -log_probs[2, 0, x0[2, 0]] - log_probs[2, 3, x0[2, 3]]]
    torch.testing.assert_close(nll, torch.tensor(expected, dtype=torch.float32))
    w = (1 - 1e-3) / ((1 - 1e-3) * t)  # log-linear: −α′/(1 − α) = 1/t
    torch.testing.assert_close(elbo_loss(log_probs, x0, z_t, t, schedule, 5), (w * nll).mean() / 4)


# --- utilities ------------------------------------------------------------------------------


def test_warmup_lr() -> None:
    assert warmup_lr(0, 10, 1.0) == pytest.approx(0.1)
    assert warmup_lr(9, 10, 1.0) == pytest.approx(1.0)
    assert warmup_lr(500, 10, 1.0) == 1.0
    assert warmup_lr(100, 0, 2.0, total=100, final_frac=0.1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="step"):
        warmup_lr(-1, 10, 1.0)


def test_ema_update_formula() -> None:
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    old = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(ema.shadow[name], 0.9 * old[name] + 0.1 * p)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.9


def test_rng_state_round_trip() -> None:
    gen = torch.Generator().manual_seed(5)
    state = capture_rng_state({"g": gen})
    first = (random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=gen)))
    torch.rand(100), np.random.rand(7), random.random(), torch.rand(3, generator=gen)
    restore_rng_state(state, {"g": gen})
    again = (random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=gen)))
    assert first == again
    with pytest.raises(ValueError, match="generator"):
        restore_rng_state(state, {"missing": gen})


def test_optimizer_state_round_trip() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    json.dumps(meta)  # JSON-able
    opt2 = build_optimizer(model, lr=1.0)
    optimizer_from_tensors(opt2, tensors, meta)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx in a["state"]:
        for key in a["state"][idx]:
            assert torch.equal(a["state"][idx][key], b["state"][idx][key])


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip_and_corruption(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(3, dtype=torch.int64), "c": torch.ones(2, dtype=torch.uint8)}
    save_checkpoint(tmp_path, tensors, {"step": 7})
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 7 and json.loads((tmp_path / "config.json").read_text())["step"] == 7
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())

    path = tmp_path / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent")


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, {"w": torch.zeros(1000)}, {"step": 1})
    before = (tmp_path / "checkpoint.safetensors").read_bytes()

    def crash(fd: int) -> None:  # the data is partly on disk when the "power fails"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"w": torch.ones(1000)}, {"step": 2})
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors", "config.json"]  # no temp files left
    tensors, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.zeros(1000))


def test_non_json_meta_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path, {"w": torch.zeros(1)}, {"bad": object()})
    assert not (tmp_path / "checkpoint.safetensors").exists()


# --- training -------------------------------------------------------------------------------


def test_loss_decreases_on_a_tiny_problem(tmp_path: Path) -> None:
    """40 steps take the held-out ELBO clearly below its value at initialisation (≈ log K)."""
    torch.manual_seed(0)
    source = tiny_source()
    cfg = tiny_config(tmp_path / "run", max_steps=40, batch_size=32, ema_decay=0.0, save_every=1000)
    eval_x0 = source.sample_batch(128, SEQ_LEN, torch.Generator().manual_seed(99))
    schedule = LogLinearSchedule()
    init_model = TransformerDenoiser(DenoiserConfig.preset("tiny", 16, SEQ_LEN))
    before = evaluate_elbo(init_model, None, eval_x0, schedule, 16, torch.device("cpu"))
    summary = train(cfg, source=source)
    model, meta = load_denoiser(tmp_path / "run")
    after = evaluate_elbo(model, None, eval_x0, load_schedule(meta), 16, torch.device("cpu"))
    assert summary["step"] == 40 and meta["step"] == 40
    assert after < before - 0.15, (before, after)
    metrics = [strict_json_loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics) and metrics[-1]["event"] == "end"


def _all_tensors(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run)
    return tensors


def test_exact_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """Killed at step 10 (last checkpoint at 8) and resumed: bitwise the same weights, EMA,
    optimizer state and RNG states at step 12 as a run straight through."""
    source = tiny_source()
    straight = tmp_path / "straight"
    train(tiny_config(straight, dropout=0.1), source=source)

    resumed = tmp_path / "resumed"

    def kill(step: int) -> None:
        if step == 10:
            raise TrainingStopped

    with pytest.raises(TrainingStopped):
        train(tiny_config(resumed, dropout=0.1), source=source, step_callback=kill)
    assert load_checkpoint(resumed)[1]["step"] == 8
    train(tiny_config(resumed, dropout=0.1, resume=True), source=source)

    a, b = _all_tensors(straight), _all_tensors(resumed)
    assert a.keys() == b.keys()
    assert any(k.startswith("optim.") for k in a) and any(k.startswith("rng.gen.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def test_a_run_stopped_by_sigterm_saves_that_step_and_resumes_exactly(tmp_path: Path) -> None:
    """SIGTERM after step 10 (checkpoints every 4 steps): the run ends with a checkpoint at step 10, not 8,
    and resumed to 12 it is bitwise the run straight through.  The test's own SIGTERM handler raises, so a
    loop that does not take the signal fails the test instead of ending pytest."""
    import signal

    from test_contracts_loop import send_to_main_thread

    def raise_on_sigterm(signum, frame):
        raise RuntimeError("SIGTERM reached the test's handler: the loop did not take it")

    source = tiny_source()
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(tiny_config(straight, dropout=0.1), source=source)
    previous = signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        summary = train(tiny_config(stopped, dropout=0.1), source=source,
                        step_callback=lambda step: send_to_main_thread(signal.SIGTERM) if step == 10 else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert summary["interrupted"] and summary["step"] == 10
    assert load_checkpoint(stopped)[1]["step"] == 10
    assert not train(tiny_config(stopped, dropout=0.1, resume=True), source=source)["interrupted"]
    a, b = _all_tensors(straight), _all_tensors(stopped)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_the_train_command_exits_130_after_saving_when_sent_sigterm(tmp_path: Path) -> None:
    """`mcd train` in its own process: SIGTERM while it trains ends it with status 130 (not killed: -15) and a
    checkpoint at the step it reached (saves are otherwise every 10^6 steps)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "sampler.cli", "train", "--out", str(out), "--size", "tiny", "--seq-len", "16",
               "--batch-size", "4", "--max-steps", "1000000", "--save-every", "1000000", "--log-every", "1",
               "--eval-every", "1000000", "--no-progress", "--threads", "1"]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count('"step"') >= 3) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGTERM at step" in stderr
    step = load_checkpoint(out)[1]["step"]
    assert step >= 3 and f"SIGTERM at step {step}:" in stderr


def test_existing_run_needs_resume_and_resume_checks_vocabulary(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, max_steps=2), source=tiny_source())
    before = (run / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a checkpoint; set resume=True") as refused:  # the Python field,
        train(tiny_config(run, max_steps=4), source=tiny_source())
    assert "--resume" not in str(refused.value)  # not the command-line flag, through the library
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        train(tiny_config(run, max_steps=4, resume=True), source=tiny_source(vocab_size=20))
    assert (run / "checkpoint.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="resume=True: there is no checkpoint"):
        train(tiny_config(tmp_path / "absent", resume=True), source=tiny_source())


def test_bad_training_config() -> None:
    for bad in (dict(max_steps=0), dict(batch_size=0), dict(lr=-1.0), dict(minutes=-1.0), dict(ema_decay=1.0)):
        with pytest.raises(ValueError):
            tiny_config(Path("unused"), **bad).validate()


def test_cli_train_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sampler.cli import main

    run = tmp_path / "cli"
    args = ["train", "--out", str(run), "--steps", "3", "--seq-len", "16", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert load_checkpoint(run)[1]["step"] == 3
    before = (run / "checkpoint.safetensors").read_bytes()
    assert main(args) == 2  # exists without --resume
    assert "already holds a checkpoint; pass --resume" in capsys.readouterr().err
    assert main(args[:4] + ["0"] + args[5:] + ["--resume"]) == 2  # steps < 1
    assert "steps" in capsys.readouterr().err
    assert (run / "checkpoint.safetensors").read_bytes() == before
    data = bytearray(before)
    data[-1] ^= 0xFF
    (run / "checkpoint.safetensors").write_bytes(bytes(data))
    assert main(args[:4] + ["5"] + args[5:] + ["--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert os.path.getsize(run / "checkpoint.safetensors") == len(before)


def test_checkpoint_written_before_the_restructure_resumes(tmp_path: Path) -> None:
    """A teacher checkpoint whose meta has the names written before issue 9 (train_config with `ema`
    and `steps`, no `ema_decay` / `max_steps`) still resumes, to the same weights as a run straight through;
    the old names map onto the new ones."""
    from sampler.train import TrainConfig as Config

    source = tiny_source()
    straight, old = tmp_path / "straight", tmp_path / "old"
    train(tiny_config(straight, max_steps=8), source=source)
    train(tiny_config(old, max_steps=4), source=source)
    tensors, meta = load_checkpoint(old)
    stored = dict(meta["train_config"])
    stored["ema"], stored["steps"] = stored.pop("ema_decay"), stored.pop("max_steps")
    old_meta = {k: v for k, v in meta.items() if k != "format_version"}
    save_checkpoint(old, tensors, {**old_meta, "train_config": stored})
    assert "ema" in load_checkpoint(old)[1]["train_config"]

    mapped = Config.from_dict(stored)
    assert (mapped.ema_decay, mapped.max_steps) == (stored["ema"], stored["steps"])
    train(tiny_config(old, max_steps=8, resume=True), source=source)
    a, b = _all_tensors(straight), _all_tensors(old)
    assert [k for k in a if k.startswith(("model.", "ema.", "optim.")) and not torch.equal(a[k], b[k])] == []
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        Config.from_dict({**stored, "not_a_field": 1})


def test_train_ends_with_a_human_summary_and_samples_of_the_exact_source_print_as_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`mcd train` ends with what it wrote, the held-out ELBO in nats/token and the next command (the JSON dict
    only with --json); `mcd sample` of the embedded hidden Markov source says its lines are token ids and prints
    integers, not letters.  Planted bug: the summary printed as the raw JSON dict again."""
    from sampler.cli import main

    run = tmp_path / "run"
    fast = ["--steps", "2", "--seq-len", "8", "--batch-size", "4", "--no-progress", "--device", "cpu"]
    assert main(["train", "--out", str(run), *fast]) == 0
    out = capsys.readouterr().out
    assert f"trained into {run}: step 2" in out and "held-out ELBO (an upper bound on the NLL): " in out
    assert "nats/token" in out and f"next: mcd sample --ckpt {run}" in out and '"rank"' not in out
    assert main(["train", "--out", str(run), *fast[:1], "3", *fast[2:], "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    assert main(["sample", "--ckpt", str(run), "--steps", "4", "--num", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("token ids") and "hidden Markov" in lines[0]
    assert [len(line.split()) for line in lines[1:3]] == [8, 8] and all(w.isdigit() for w in lines[1].split())
