"""Contract of the checkpoint loader: EMA weights are what a denoiser checkpoint serves by default.

`load_denoiser(RUN)` returns the "ema.*" weights when the checkpoint has them (use_ema=True, the
default), the raw "model.*" weights with use_ema=False.  Planted bug caught: the loader silently
ignoring the EMA weights (every evaluation and sample would then use the raw ones).
"""

from __future__ import annotations

from pathlib import Path

import torch

# Library names in one place (re-point here when the modules move).
from sampler.checkpoint import load_checkpoint, load_denoiser
from teacher_fixtures import make_teacher


def test_load_denoiser_serves_ema_weights_unless_asked_for_raw(tmp_path: Path) -> None:
    run = make_teacher(tmp_path / "run", seed=0, ema_seed=1)
    tensors, _ = load_checkpoint(run)
    names = [name[len("ema."):] for name in tensors if name.startswith("ema.")]
    assert names and any(not torch.equal(tensors["ema." + n], tensors["model." + n]) for n in names)

    for use_ema, prefix in ((True, "ema."), (False, "model.")):
        model, _ = load_denoiser(run, use_ema=use_ema)
        state = model.state_dict()
        for n in names:
            assert torch.equal(state[n], tensors[prefix + n]), f"use_ema={use_ema}: {n}"
    default, _ = load_denoiser(run)
    assert all(torch.equal(default.state_dict()[n], tensors["ema." + n]) for n in names)

    # the two weight sets give different predictions, so serving the wrong one is visible downstream
    z = torch.full((2, 12), default.mask_id)
    raw, _ = load_denoiser(run, use_ema=False)
    with torch.no_grad():
        assert (default(z) - raw(z)).abs().max() > 1e-4


def test_load_denoiser_without_ema_weights_uses_the_raw_ones(tmp_path: Path) -> None:
    run = make_teacher(tmp_path / "run", seed=3)
    tensors, _ = load_checkpoint(run)
    model, _ = load_denoiser(run, use_ema=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, tensors["model." + name]), name
