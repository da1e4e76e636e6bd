"""The text benchmark is the command `mcd bench-text` (sampler.cli.bench_text; its back-end sampler.run.text_bench).
This script runs it with the same arguments, for the commands written before it moved:

    PYTHONPATH=$PWD python benchmarks/text_bench.py --smoke --out /tmp/text-bench-smoke
"""

from __future__ import annotations

import sys

from sampler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-text", *sys.argv[1:]]))
