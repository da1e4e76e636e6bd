"""Sampling from a checkpoint (`mcd sample`, from a SampleConfig): the ancestral sampler over its
denoiser (the noise-shared sampler for a shadow student, as its checkpoint says), with an optional
prompt, written as JSONL.

Writes one JSON object per sample ({"index", "ids", "text"}) to `out` (default
RUN/samples-<steps>steps-seed<seed>.jsonl).  The cached sampler (skip the network for sequences
no step changed) is used whenever the model has no time conditioning; its output equals the
uncached sampler's for the same seed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from ..data import source_or_stored_tokenizer, strict_json
from ..rundir import check_output_path
from ..sampling import prefix_tokens
from ..configs import SampleConfig  # noqa: F401  (defined torch-free for the command line; re-exported)
from .open import open_for_inference


def parse_prefix(prefix: str | None, prefix_ids: str | None, source: Any, vocab_size: int) -> list[int]:
    """Token ids of the prompt: --prefix-ids parsed as integers, --prefix encoded by the source."""
    if prefix is not None and prefix_ids is not None:
        raise ValueError("give --prefix or --prefix-ids, not both")
    if prefix_ids is not None:
        try:
            ids = [int(p) for p in prefix_ids.replace(",", " ").split()]
        except ValueError as err:
            raise ValueError(f"--prefix-ids must be integers separated by commas or spaces, got {prefix_ids!r}") from err
    elif prefix is not None:
        encoder = getattr(source, "encode", None) or getattr(getattr(source, "tokenizer", None), "encode", None)
        if encoder is None:
            raise ValueError(f"the checkpoint's source {getattr(source, 'name', source)!r} has no text encoder; use --prefix-ids")
        ids = [int(v) for v in encoder(prefix)]
    else:
        return []
    bad = [v for v in ids if not 0 <= v < vocab_size]
    if bad:
        raise ValueError(f"prefix token ids must lie in [0, {vocab_size}), got {bad[:5]}")
    return ids


def sample_output_path(args: SampleConfig) -> Path:
    """--out, or RUN/samples-<steps>steps-seed<seed>.jsonl next to the checkpoint (SampleConfig.output_file)."""
    return args.output_file()


def sample_from_checkpoint(args: SampleConfig) -> dict[str, Any]:
    """Sample args.num sequences and write them as JSONL; every argument and the output path are checked first."""
    for name in ("steps", "num", "batch_size"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.seq_len is not None and args.seq_len < 1:
        raise ValueError(f"--seq-len must be >= 1, got {args.seq_len}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    out = check_output_path(sample_output_path(args), kind="file", name="--out")
    run = open_for_inference(args)
    config, meta = run.model.config, run.meta
    if args.final_greedy and run.kind.name == "shadow":
        raise ValueError(f"--final-greedy is not available for the shadow student at {args.ckpt!r}: every draw reads its noise")
    source = None
    try:
        source = source_or_stored_tokenizer(meta.get("source"), meta.get("tokenizer"), corpus_needed=False)
    except Exception as err:  # text is a convenience; ids are always written
        print(f"warning: could not rebuild the data source ({err}); writing ids only", file=sys.stderr)
    if source is not None and int(source.vocab_size) != config.vocab_size:
        raise ValueError(f"vocabulary mismatch: source has {source.vocab_size} tokens, the checkpoint's model {config.vocab_size}")
    seq_len = args.seq_len or config.seq_len
    if seq_len > config.seq_len:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's seq_len={config.seq_len}")
    prefix = parse_prefix(args.prefix, args.prefix_ids, source, config.vocab_size)
    fixed = prefix_tokens(prefix, args.num, seq_len, config.vocab_size, config.mask_id)
    start = time.perf_counter()
    samples = run.sample(num_samples=args.num, num_steps=args.steps, seq_len=seq_len, seed=args.seed,
                         temperature=args.temperature, final_greedy=args.final_greedy, fixed=fixed,
                         cached=not args.no_cache, batch_size=args.batch_size, progress=True)
    elapsed = time.perf_counter() - start
    lines = []
    for i, row in enumerate(samples):
        record: dict[str, Any] = {"index": i, "ids": row.tolist()}
        if source is not None:
            record["text"] = source.decode(row)
        lines.append(strict_json(record))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    return {
        "out": str(out), "num": args.num, "seq_len": seq_len, "steps": args.steps, "seconds": elapsed,
        "tokens_per_s": samples.numel() / max(elapsed, 1e-9), "samples": samples, "source": source,
    }


__all__ = ["SampleConfig", "sample_from_checkpoint", "sample_output_path", "parse_prefix"]
