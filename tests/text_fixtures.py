"""A tiny randomly initialised evaluator LM for the text path's tests (a helper module, not a test file); it lives
in the package (sampler.quality.tiny_evaluator) because `mcd bench-text --smoke` uses it too."""

from __future__ import annotations

from sampler.quality.tiny_evaluator import TEXT, make_tiny_evaluator

__all__ = ["TEXT", "make_tiny_evaluator"]
