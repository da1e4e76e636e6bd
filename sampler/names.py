"""Names, file names and presets that the command line offers before any torch import: the model size presets and the
divergences.  `sampler.model` and `sampler.losses` read them from here (torch-free, so `mcd` can check its
arguments in well under a second)."""

from __future__ import annotations

PRESETS: dict[str, dict[str, int]] = {
    # CPU: trains at a few steps/s on one thread; enough for the exact-likelihood source.
    "tiny": dict(d_model=64, n_layers=4, n_heads=4),
    "mini": dict(d_model=256, n_layers=6, n_heads=8),
    # CPU, text at byte or character level (0.8 M parameters at K ≈ 80): about 0.45 s a step at batch 32, L = 128
    # on one core, so a 90-minute budget gives about 12 000 steps (the scale of a 4-layer, 128-wide character model).
    "cpu-text": dict(d_model=128, n_layers=4, n_heads=4),
    # GPU: the size of MDLM / SEDD "small" (≈ GPT-2 small body).
    "small": dict(d_model=768, n_layers=12, n_heads=12),
}

DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "js")

CHECKPOINT_FILE = "checkpoint.safetensors"  # in a run directory: the authoritative checkpoint
CONFIG_FILE = "config.json"  # in a run directory: the same meta, human-readable
