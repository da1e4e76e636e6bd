"""Contracts of the training loop (sampler.train.loop.run_loop) that every command runs, checked on a
tiny linear model whose optimiser records what it sees (step pre/post hooks).  At 0-based step k:

    lr_k = lr · min(1, (k + 1)/warmup)                      the learning rate of step k's update;
    g_k  = ∇loss_k · min(1, grad_clip/‖∇loss_k‖)            the gradient AdamW steps with;
    ema_{k+1} = d_k · ema_k + (1 − d_k) · θ_{k+1}           θ_{k+1}: the weights AFTER step k's update,
    d_k = min(decay, (1 + k)/(10 + k)) with ema_warmup,  else decay;   ema_0 = θ_0.

The formulas are written here, not taken from the library.  Planted bugs caught (sampler/train/loop.py):
the EMA update dropped; the EMA updated before the optimiser step (it averages θ_k, not θ_{k+1});
the warmup lr taken at step + 1; gradient clipping removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

# Library names in one place (re-point here when the modules move).
from sampler.train import OptimConfig, RunConfig
from sampler.train.loop import LoopHooks, StepOutput, run_loop
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


def recorded_run(tmp_path: Path, ema_warmup: bool = False) -> Recorded:
    """STEPS loop steps of a seeded 4 -> 3 linear least-squares model; the loss is scaled by BIG on
    even steps and SMALL on odd ones, so clipping is active on some steps and inactive on others."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    inputs, targets = torch.randn(8, 4), torch.randn(8, 3)
    optim = OptimConfig(lr=LR, warmup=WARMUP, grad_clip=CLIP, ema_decay=DECAY)
    run = RunConfig(out=str(tmp_path), log_every=1, save_every=10**6, progress=False)
    optimizer = build_optimizer(model, lr=optim.lr)
    trainee = Trainee(model, model, optimizer, EMA(model, optim.ema_decay), ema_warmup=ema_warmup)
    rec = Recorded(weights=[flat(model.parameters())])

    def before_update(opt, args, kwargs) -> None:
        rec.lrs.append([group["lr"] for group in opt.param_groups])
        rec.stepped_grads.append(flat(p.grad for p in model.parameters()))

    optimizer.register_step_pre_hook(before_update)
    optimizer.register_step_post_hook(lambda opt, args, kwargs: rec.weights.append(flat(model.parameters())))

    def step_fn(k: int) -> StepOutput:
        scale = BIG if k % 2 == 0 else SMALL
        loss = scale * ((model(inputs) - targets) ** 2).mean()
        rec.raw_grads.append(flat(torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)))
        return StepOutput(loss)

    def after_step(step: int) -> None:
        rec.emas.append(flat(trainee.ema.shadow[name] for name, _ in model.named_parameters()))

    metrics = tmp_path / "metrics.jsonl"
    result = run_loop(trainee, step_fn, LoopHooks(save=lambda step: None, after_step=after_step), optim, run,
                      MetricsLogger(metrics), stop=STEPS)
    assert result.step == STEPS and len(rec.weights) == STEPS + 1 and len(rec.emas) == STEPS
    rec.records = read_metrics(metrics)
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
