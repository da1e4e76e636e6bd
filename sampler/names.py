"""Names, file names and presets that the command line offers before any torch import: the model size presets, the
divergences, the run-file names and the evaluator LMs' names (`check_evaluator_name`).  `sampler.model` and
`sampler.losses` read them from here (torch-free, so `mcd` can check its arguments in well under a second)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


SMOLLM2 = "smollm2"  # the default evaluator LM of generative perplexity (sampler.quality.gen_perplexity)
KNOWN_EVALUATORS: tuple[str, ...] = (SMOLLM2,)


def check_evaluator_name(name: Any, option: str = "--evaluator") -> str:
    """`name` when it is a known evaluator (``smollm2``) or an existing local ``.gguf`` file or model
    directory; ValueError naming `option` otherwise, before any network access or model loading."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{option} must be a non-empty name or path, got {name!r}")
    if name in KNOWN_EVALUATORS:
        return name
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return name
    what = "a file that is not .gguf" if path.is_file() else "neither a known evaluator nor an existing local path"
    raise ValueError(
        f"{option} {name!r} is {what}: give one of {list(KNOWN_EVALUATORS)}, a local .gguf file or a local "
        f"Hugging Face model directory (download a Hub model first, e.g. `huggingface-cli download NAME "
        f"--local-dir DIR`, and pass DIR), or 'none'"
    )
