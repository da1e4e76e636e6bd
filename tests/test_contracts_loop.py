"""Contracts of the training loop (sampler.train.loop.run_loop) that every command runs, checked on a
tiny linear model whose optimiser records what it sees (step pre/post hooks).  At 0-based step k:

    lr_k = lr · min(1, (k + 1)/warmup)                      the learning rate of step k's update;
    g_k  = ∇loss_k · min(1, grad_clip/‖∇loss_k‖)            the gradient AdamW steps with;
    ema_{k+1} = d_k · ema_k + (1 − d_k) · θ_{k+1}           θ_{k+1}: the weights AFTER step k's update,
    d_k = min(decay, (1 + k)/(10 + k)) with ema_warmup,  else decay;   ema_0 = θ_0.

The formulas are written here, not taken from the library.  Planted bugs caught (sampler/train/loop.py):
the EMA update dropped; the EMA updated before the optimiser step (it averages θ_k, not θ_{k+1});
the warmup lr taken at step + 1; gradient clipping removed.

Stop signals: SIGINT or SIGTERM arriving in the middle of step k's update (after the optimiser step,
before the EMA update) ends the run after that whole step, with one checkpoint at step k + 1.  Planted
bugs caught: acting on the signal at once (the old Ctrl-C path: a checkpoint whose step, weights and
EMA disagree); SIGTERM not handled; the previous handlers not put back; an ignored SIGINT taken over;
under torch.distributed, each rank stopping on its own signal only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

# Library names in one place (re-point here when the modules move).
from sampler.train import OptimConfig, RunConfig
from sampler.train.loop import LoopHooks, LoopResult, StepOutput, run_loop
from sampler.train.runtime import EMA, MetricsLogger, Trainee, build_optimizer, read_metrics

STEPS, WARMUP, LR, DECAY, CLIP = 6, 4, 0.05, 0.9, 0.5
BIG, SMALL = 100.0, 1e-3  # loss scales: gradient norm far above / far below CLIP (even steps / odd steps)


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


@dataclass
class Recorded:
    """Per step k: lrs[k] (each param group), raw_grads[k] (∇loss before clipping), stepped_grads[k]
    (what the optimiser saw), weights[k + 1] (after the update; weights[0] = θ_0), emas[k] (EMA after
    step k, from the loop's after_step hook), logged metric records."""

    lrs: list[list[float]] = field(default_factory=list)
    raw_grads: list[torch.Tensor] = field(default_factory=list)
    stepped_grads: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    emas: list[torch.Tensor] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    saves: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (step, weights, EMA) at each save
    result: LoopResult | None = None


def recorded_run(tmp_path: Path, ema_warmup: bool = False, on_update: Callable[[int], None] | None = None,
                 rec: Recorded | None = None, deadline_s: float | None = None) -> Recorded:
    """STEPS loop steps of a seeded 4 -> 3 linear least-squares model; the loss is scaled by BIG on
    even steps and SMALL on odd ones, so clipping is active on some steps and inactive on others.
    `on_update(k)` runs right after the optimiser step of step k, before its EMA update; `rec` (filled
    in place) lets a caller read what was recorded when the run raises."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    inputs, targets = torch.randn(8, 4), torch.randn(8, 3)
    optim = OptimConfig(lr=LR, warmup=WARMUP, grad_clip=CLIP, ema_decay=DECAY)
    run = RunConfig(out=str(tmp_path), log_every=1, save_every=10**6, progress=False)
    optimizer = build_optimizer(model, lr=optim.lr)
    trainee = Trainee(model, model, optimizer, EMA(model, optim.ema_decay), ema_warmup=ema_warmup)
    rec = rec if rec is not None else Recorded()
    rec.weights.append(flat(model.parameters()))

    def before_update(opt, args, kwargs) -> None:
        rec.lrs.append([group["lr"] for group in opt.param_groups])
        rec.stepped_grads.append(flat(p.grad for p in model.parameters()))

    optimizer.register_step_pre_hook(before_update)
    def after_update(opt, args, kwargs) -> None:
        rec.weights.append(flat(model.parameters()))
        if on_update is not None:
            on_update(len(rec.weights) - 2)

    optimizer.register_step_post_hook(after_update)

    def step_fn(k: int) -> StepOutput:
        scale = BIG if k % 2 == 0 else SMALL
        loss = scale * ((model(inputs) - targets) ** 2).mean()
        rec.raw_grads.append(flat(torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)))
        return StepOutput(loss)

    def after_step(step: int) -> None:
        rec.emas.append(flat(trainee.ema.shadow[name] for name, _ in model.named_parameters()))

    def save(step: int) -> None:
        rec.saves.append((step, flat(model.parameters()), flat(trainee.ema.shadow[name] for name, _ in model.named_parameters())))

    metrics = tmp_path / "metrics.jsonl"
    rec.result = run_loop(trainee, step_fn, LoopHooks(save=save, after_step=after_step), optim, run,
                          MetricsLogger(metrics), stop=STEPS, deadline_s=deadline_s)
    assert on_update is not None or (rec.result.step == STEPS and len(rec.weights) == STEPS + 1 and len(rec.emas) == STEPS)
    rec.records = read_metrics(metrics) if metrics.is_file() else []  # no step, no record
    return rec


@pytest.mark.parametrize("ema_warmup", [False, True])
def test_ema_averages_the_weights_after_each_update(tmp_path: Path, ema_warmup: bool) -> None:
    rec = recorded_run(tmp_path, ema_warmup)
    for k in range(STEPS):  # every update moves the weights, so averaging θ_k instead of θ_{k+1} shows
        assert float((rec.weights[k + 1] - rec.weights[k]).abs().max()) > 1e-3
    ema = rec.weights[0].clone()
    for k in range(STEPS):
        decay = min(DECAY, (1 + k) / (10 + k)) if ema_warmup else DECAY
        ema = decay * ema + (1 - decay) * rec.weights[k + 1]
        torch.testing.assert_close(rec.emas[k], ema, atol=1e-6, rtol=1e-6, msg=f"EMA after step {k}")


def test_each_update_runs_at_the_warmup_lr(tmp_path: Path) -> None:
    rec = recorded_run(tmp_path)
    expected = [LR * min(1.0, (k + 1) / WARMUP) for k in range(STEPS)]
    assert len(set(expected)) > 1  # the warmup is visible within the run
    for k in range(STEPS):
        assert rec.lrs[k] == pytest.approx([expected[k]] * len(rec.lrs[k]), rel=1e-12), f"step {k}"
    assert [r["lr"] for r in rec.records] == pytest.approx(expected, rel=1e-12)  # the log says the same


def test_updates_use_the_gradient_clipped_to_grad_clip(tmp_path: Path) -> None:
    rec = recorded_run(tmp_path)
    for k in range(STEPS):
        raw_norm = float(rec.raw_grads[k].norm())
        if k % 2 == 0:
            assert raw_norm > 10 * CLIP  # clipping has work to do
            expected = rec.raw_grads[k] * (CLIP / raw_norm)
        else:
            assert raw_norm < CLIP / 10  # a small gradient passes unchanged
            expected = rec.raw_grads[k]
        torch.testing.assert_close(rec.stepped_grads[k], expected, rtol=1e-5, atol=1e-9, msg=f"step {k}")
        assert rec.records[k]["grad_norm"] == pytest.approx(raw_norm, rel=1e-5)  # logged: the norm before clipping


class _Terminated(Exception):
    """Raised by the test's own SIGTERM handler: a SIGTERM the loop did not take ends the test, not pytest."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


@pytest.fixture
def own_handlers():
    """SIGTERM raises _Terminated during the test; both handlers are put back after it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def send_to_main_thread(signum: int) -> None:
    """The signal to this process's main thread, whose handler then runs before the next bytecodes.  (os.kill
    may land on a torch or gloo worker thread, and on a loaded machine the handler can then run a step late.)"""
    signal.pthread_kill(threading.main_thread().ident, signum)


def _send_at(k: int, signum: int, times: int = 1) -> Callable[[int], None]:
    """An on_update callback: `times` signals to this process in the middle of step k's update."""
    def on_update(update: int) -> None:
        if update == k:
            for _ in range(times):
                send_to_main_thread(signum)
    return on_update


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_run_after_the_whole_step_with_one_checkpoint(tmp_path: Path, own_handlers, signum) -> None:
    try:
        rec = recorded_run(tmp_path, on_update=_send_at(2, signum))
    except (KeyboardInterrupt, _Terminated) as escaped:  # else pytest itself would stop on the KeyboardInterrupt
        pytest.fail(f"{type(escaped).__name__} escaped the loop: the first signal acted at once")
    assert rec.result.interrupted and rec.result.step == 3
    assert len(rec.weights) == 4  # updates 0, 1, 2: none after the signal
    ema = rec.weights[0].clone()
    for k in range(3):
        ema = DECAY * ema + (1 - DECAY) * rec.weights[k + 1]
    [(step, weights, saved_ema)] = rec.saves  # save_every is never reached: the one save is the stop's
    assert step == 3
    torch.testing.assert_close(weights, rec.weights[3])
    torch.testing.assert_close(saved_ema, ema, atol=1e-6, rtol=1e-6)  # step 2's EMA update was not skipped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    assert signal.getsignal(signal.SIGTERM) is _raise_terminated


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, _Terminated)])
def test_a_second_signal_acts_at_once_without_a_save(tmp_path: Path, own_handlers, signum, raised) -> None:
    rec = Recorded()
    with pytest.raises(raised):
        recorded_run(tmp_path, on_update=_send_at(2, signum, times=2), rec=rec)
    assert rec.saves == [] and len(rec.weights) == 4  # it acted inside step 2: no EMA update, no save


def test_a_signal_in_the_last_step_still_counts_as_a_stop(tmp_path: Path, own_handlers) -> None:
    """The loop ends there anyway, but the run must say it was stopped (a bench must not go on to the next run)."""
    rec = recorded_run(tmp_path, on_update=_send_at(STEPS - 1, signal.SIGTERM))
    assert rec.result.interrupted and rec.result.step == STEPS and [save[0] for save in rec.saves] == [STEPS]


def test_an_ignored_sigint_stays_ignored(tmp_path: Path, own_handlers) -> None:
    """A job a script starts with `&` ignores SIGINT; the loop must not take it over (it stops on SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rec = recorded_run(tmp_path, on_update=_send_at(2, signal.SIGINT))
    assert not rec.result.interrupted and rec.result.step == STEPS
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is _raise_terminated  # put back after a run that no signal stopped


class _FakeTwoRanks:
    """torch.distributed as seen by rank 0 of 2: every all_reduce(MAX) also reads the other rank's flags
    [signal, past deadline], which turn to `remote` once rank 0 has called it `after` times (rank 0 is never
    signalled itself).  In-process: a real two-process gloo run aborted in teardown on this machine now and then."""

    def __init__(self, remote: list[float], after: int) -> None:
        self.remote, self.after, self.calls, self.sent = remote, after, 0, []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return 2

    def all_reduce(self, tensor: torch.Tensor, op: object) -> None:
        assert op == torch.distributed.ReduceOp.MAX
        self.sent.append(tensor.tolist())
        if self.calls >= self.after:
            tensor.copy_(torch.maximum(tensor, torch.tensor(self.remote, dtype=tensor.dtype)))
        self.calls += 1


def _fake_two_ranks(monkeypatch, remote: list[float], after: int) -> _FakeTwoRanks:
    import torch._dynamo  # noqa: F401  imported lazily by the first optimizer; its import reads torch.distributed
    import torch.distributed

    fake = _FakeTwoRanks(remote, after)  # the real ReduceOp stays: the fake only replaces the process group's calls
    for name in ("is_available", "is_initialized", "get_world_size", "all_reduce"):
        monkeypatch.setattr(torch.distributed, name, getattr(fake, name))
    return fake


@pytest.mark.parametrize("remote, interrupted", [([1.0, 0.0], True), ([0.0, 1.0], False)])
def test_under_torch_distributed_every_rank_stops_after_the_same_step(tmp_path: Path, monkeypatch, remote,
                                                                      interrupted) -> None:
    """A signal or the deadline at another rank stops this one after the same step (else the others would wait
    for it in their next collective): the flags are all-reduced before each step, here from step 3 on.  A
    deadline elsewhere is not counted as a signal's stop."""
    fake = _fake_two_ranks(monkeypatch, remote, after=3)
    rec = recorded_run(tmp_path, on_update=lambda k: None)
    assert rec.result.step == 3 and rec.result.interrupted is interrupted
    assert fake.calls == 4 and [save[0] for save in rec.saves] == [3]


def test_under_torch_distributed_this_ranks_deadline_is_sent_to_the_others(tmp_path: Path, monkeypatch) -> None:
    """With its wall-clock budget spent (0 s), this rank stops before step 0 and tells the others so: the
    all-reduced flags carry its deadline, not only its signal."""
    fake = _fake_two_ranks(monkeypatch, [0.0, 0.0], after=0)
    rec = recorded_run(tmp_path, on_update=lambda k: None, deadline_s=0.0)
    assert rec.result.step == 0 and not rec.result.interrupted
    assert fake.sent == [[0.0, 1.0]]
