"""THE training loop of every command: it takes a step function.

A step function maps the 0-based index k of an optimiser step to the loss of that step's
batch (it draws the batch, runs the forward passes under autocast and returns the loss and
statistics).  The loop owns everything around it, in this order at each step:

    hooks.before_step(k)          (e.g. the distillation rounds: teacher refresh, dt, temperature)
    lr_k = lr · min(1, (k + 1)/warmup);  out = step_fn(k)        (non-finite loss: FloatingPointError)
    zero_grad; backward; clip_grad_norm(grad_clip); AdamW step; EMA update; k ← k + 1
    every log_every steps (and at the stop step): one JSONL record, loss averaged since the last one
                                  (a window cut by a resume is marked loss_window_partial)
    every save_every steps (before the stop step): hooks.save(k)
    hooks.after_step(k)           (held-out evaluation, a test's callback)

and hooks.save at the end (not when an exception ends the run).

It stops at `stop` steps or at the wall-clock `deadline_s`, whichever comes first, or at a stop
signal: Ctrl-C (SIGINT) or SIGTERM lets the current step finish (update and EMA), saves the
checkpoint at that step and returns with `interrupted` set (`StopSignals`).  Under torch.distributed
the ranks agree on the deadline and the signals before each step, so all stop after the same one.
The progress bar counts steps towards `stop`, or seconds towards the deadline when only a time
budget is given.  The checkpoint itself (what it holds, the exact resume)
is the command's `hooks.save`, built on `Trainee.state_tensors`.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import OptimConfig, RunConfig
from .runtime import MetricsLogger, Trainee, is_main_process, set_lr, warmup_lr

__all__ = ["StepOutput", "LoopHooks", "LoopResult", "StopSignals", "StoppedBySignal", "run_loop"]


@dataclass
class StepOutput:
    """The loss of one step (a scalar tensor with a graph) and statistics to log (floats)."""

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


StepFn = Callable[[int], StepOutput]


@dataclass
class LoopHooks:
    """What a command adds to the loop.  `save(step)` writes its checkpoint; `log_fields(step)`
    extra fields of a metrics record; `before_step(k)` / `after_step(k + 1)` run around step k."""

    save: Callable[[int], None]
    before_step: Callable[[int], None] | None = None
    after_step: Callable[[int], None] | None = None
    log_fields: Callable[[int], dict[str, Any]] | None = None


@dataclass
class LoopResult:
    step: int
    losses: list  # float per step; unparametrised: a runtime checker would draw from the global `random` to check items
    seconds: float
    interrupted: bool = False


def _progress(run: RunConfig, start: int, stop: int | float, budget_s: float, desc: str) -> Any:
    """A tqdm bar over steps (`stop` finite) or over seconds of the time budget; None when off."""
    if not (run.progress and is_main_process()):
        return None

    if math.isfinite(stop):
        return tqdm(total=int(stop), initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=False)
    return tqdm(total=round(budget_s), desc=desc, unit="s", dynamic_ncols=True, leave=False)


def _advance(bar: Any, by_time: bool, started: float) -> None:
    if bar is None:
        return
    if by_time:
        bar.n = min(bar.total, round(time.perf_counter() - started))
        bar.refresh()
    else:
        bar.update(1)


def _optimise(trainee: Trainee, loss: Tensor, optim: OptimConfig, step: int) -> float:
    """zero_grad, backward, clip to optim.grad_clip, AdamW step, EMA update; returns the gradient norm."""
    trainee.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), optim.grad_clip)
    trainee.optimizer.step()
    trainee.ema.update(trainee.model, step if trainee.ema_warmup else None)
    return float(grad_norm)


class StoppedBySignal(KeyboardInterrupt):
    """Raised by a caller that runs several trainings in a row (`mcd bench-distill`) when a stop signal ended
    one of them: that run's checkpoint is saved, and the caller must not go on to the next.  A KeyboardInterrupt,
    so that no `except Exception` swallows it."""


class StopSignals:
    """Within `with StopSignals() as stop:`, SIGINT (Ctrl-C) and SIGTERM (what `kill`, schedulers and
    preemption send) set `stop.received` instead of acting, so the loop can end after a whole step
    (weights, optimiser, EMA and step count agree) and save.  A second signal acts at once through the
    handler that was there before (KeyboardInterrupt, or the end of the process), without a save: the
    last checkpoint stands.  A signal the process ignores (SIGINT of a job a script started with `&`)
    stays ignored.  Handlers are only installed from the main thread, and are put back on exit.  Not
    re-entrant: one run_loop at a time per process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None  # the signal this process got
        self._agreed_signal = False  # set by should_stop(): a signal here or at another rank
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                # None: a handler installed from C, which could not be put back
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    self._previous[signum] = signal.signal(signum, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        self.received = signum
        for each, handler in self._previous.items():  # the next signal acts at once
            signal.signal(each, handler)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def should_stop(self, model: nn.Module, past_deadline: bool) -> bool:
        """Whether to stop now: a signal or the wall-clock deadline here or, under torch.distributed, at
        any rank, so that every rank stops after the same step instead of waiting for the others in a
        collective."""
        flags = [self.received is not None, past_deadline]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            agreed = torch.tensor(flags, dtype=torch.float32, device=next(model.parameters()).device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            flags = [bool(flag) for flag in agreed.tolist()]
        self._agreed_signal = flags[0]
        return any(flags)

    @property
    def stopped(self) -> bool:
        """Whether a signal ended the run: one agreed before a step, or one received during the last step
        (after which should_stop is not asked again)."""
        return self._agreed_signal or self.received is not None

    def describe(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a stop signal at another rank"


def _partial_window(step: int, averaged: int, log_every: int) -> dict[str, Any]:
    """{} when the record at `step` averages its whole window (the steps since the previous multiple of
    log_every); else {"loss_window_partial": True, "loss_window_steps": averaged}: a resumed run's first record
    averages only the steps after the resume (the steps before it were averaged by no record of this process)."""
    full = step - (step - 1) // log_every * log_every
    return {} if averaged >= full else {"loss_window_partial": True, "loss_window_steps": averaged}


def run_loop(
    trainee: Trainee, step_fn: StepFn, hooks: LoopHooks, optim: OptimConfig, run: RunConfig, logger: MetricsLogger,
    start: int = 0, stop: int | float = math.inf, deadline_s: float | None = None, desc: str = "train",
    tokens_per_step: int = 0,
) -> LoopResult:
    """Train from step `start` up to `stop` steps (or for `deadline_s` seconds); see the module docstring."""
    started = time.perf_counter()
    deadline = started + deadline_s if deadline_s is not None else math.inf
    bar = _progress(run, start, stop, deadline_s or 0.0, desc)
    by_time = bar is not None and not math.isfinite(stop)
    step, losses, window = start, [], []
    last_log_time, last_log_step = started, start
    trainee.model.train()
    with StopSignals() as stop_signal:
        try:
            while step < stop and not stop_signal.should_stop(trainee.model, time.perf_counter() >= deadline):
                if hooks.before_step is not None:
                    hooks.before_step(step)
                lr = warmup_lr(step, optim.warmup, optim.lr)
                set_lr(trainee.optimizer, lr)
                out = step_fn(step)
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(f"non-finite loss {float(out.loss)} at step {step}")
                grad_norm = _optimise(trainee, out.loss, optim, step)
                step += 1
                losses.append(float(out.loss.detach()))
                window.append(losses[-1])
                _advance(bar, by_time, started)
                if step % run.log_every == 0 or step == stop:
                    now = time.perf_counter()
                    rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
                    record = {"step": step, **(hooks.log_fields(step) if hooks.log_fields else {}), "lr": lr,
                              "grad_norm": grad_norm, "steps_per_s": rate, "tokens_per_s": rate * tokens_per_step,
                              **out.stats, "loss": sum(window) / len(window), **_partial_window(step, len(window), run.log_every)}
                    logger.log(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{rate:.1f}")
                    last_log_time, last_log_step, window = now, step, []
                if step % run.save_every == 0 and step < stop:
                    hooks.save(step)
                if hooks.after_step is not None:
                    hooks.after_step(step)
        finally:
            if bar is not None:
                bar.close()
        if stop_signal.stopped:
            print(f"\n{stop_signal.describe()} at step {step}: saving a checkpoint and stopping", file=sys.stderr)
        hooks.save(step)  # inside: a first signal during the save waits for it
    return LoopResult(step=step, losses=losses, seconds=time.perf_counter() - started, interrupted=stop_signal.stopped)
