"""Tiny teacher checkpoints for the distillation and checkpoint tests (a helper module, not a test file)."""

from __future__ import annotations

from pathlib import Path

import torch

# Library names in one place (re-point here when the modules move).
from sampler.checkpoint import prefixed, save_checkpoint
from sampler.data import get_source
from sampler.model import DenoiserConfig, TransformerDenoiser
from theory.schedules import LogLinearSchedule


def make_teacher(run_dir: Path, vocab_size: int | None = None, seq_len: int = 12, seed: int = 0,
                 mask_id: int | None = None, ema_seed: int | None = None) -> Path:
    """A tiny random-weight teacher checkpoint on the embedded source (vocab_size overrides the model's).

    With `ema_seed`, the checkpoint also holds "ema.*" weights of a second random model (seed
    ema_seed), distinct from the raw "model.*" ones, as a trained teacher's checkpoint does.
    """
    source = get_source("exact", seed=0, seq_len=seq_len)
    config = DenoiserConfig(vocab_size=vocab_size or source.vocab_size, seq_len=seq_len, d_model=16, n_layers=1, n_heads=2)
    torch.manual_seed(seed)
    tensors = prefixed("model", TransformerDenoiser(config).state_dict())
    if ema_seed is not None:
        torch.manual_seed(ema_seed)
        tensors.update(prefixed("ema", TransformerDenoiser(config).state_dict()))
    meta = {"model_config": config.to_dict(), "source": source.describe(), "schedule": LogLinearSchedule().describe(), "step": 0}
    if mask_id is not None:
        meta["mask_id"] = mask_id
    save_checkpoint(run_dir, tensors, meta)
    return run_dir


def make_text_teacher(tmp_path: Path, steps: int = 2) -> tuple[Path, str]:
    """(run directory, source spec) of a tiny teacher trained `steps` steps on a raw-text corpus written in
    tmp_path (byte tokenizer, L = 16): a source without exact likelihood."""
    from sampler.train import TrainConfig, train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 40)
    run, spec = tmp_path / "text-run", f"text:{corpus}?tokenizer=byte"
    train(TrainConfig(out=str(run), data=spec, seq_len=16, max_steps=steps, batch_size=4, warmup=1, save_every=10**6,
                      eval_every=10**6, eval_batches=1, log_every=10**6, progress=False, device="cpu"))
    return run, spec


def _refuse_constant(name: str) -> None:
    raise ValueError(f"not strict JSON: {name} (the project writes NaN and infinities as null)")


def strict_json_loads(text: str):
    """json.loads refusing NaN, Infinity and -Infinity: every JSON file the project writes must pass."""
    import json

    return json.loads(text, parse_constant=_refuse_constant)
