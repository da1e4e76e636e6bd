"""`mcd fetch`'s back-end: fetch one named item into the cache directory and say where it is."""

from __future__ import annotations

from ..data.text import CorpusUnavailableError, fetch_shakespeare
from ..quality.gen_perplexity import EvaluatorUnavailableError, locate_smollm2_gguf

UNAVAILABLE = (CorpusUnavailableError, EvaluatorUnavailableError)  # what a failed fetch raises


def fetch(name: str) -> str:
    """Fetch `name` ("shakespeare" or "smollm2") unless it is already cached; a line saying where it is.
    Raises one of UNAVAILABLE when it can be neither found nor downloaded."""
    if name == "shakespeare":
        files = fetch_shakespeare()
        return f"shakespeare: {len(files)} play texts in {files[0].parent}"
    if name == "smollm2":
        return f"smollm2: {locate_smollm2_gguf()}"
    raise ValueError(f"cannot fetch {name!r}; choose 'shakespeare' or 'smollm2'")


__all__ = ["UNAVAILABLE", "fetch"]
