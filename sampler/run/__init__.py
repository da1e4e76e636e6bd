"""Command back-ends: each opens checkpoints through `open` (the one place a checkpoint's kind picks its
loader and sampler) and writes what its command reports.

- open: open a run for inference; the checkpoint-kind registry.
- eval: `mcd eval` (sample quality per step count).
- sample: `mcd sample` (samples written as JSONL).
- bench: `mcd bench-distill` (arms against the frontiers, on two axes); arms: its arm records.
"""
