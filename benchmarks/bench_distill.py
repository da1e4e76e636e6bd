"""Every distillation arm against the teacher and exact-denoiser frontiers, on two axes (see sampler/bench_distill.py).

    python benchmarks/bench_distill.py [--smoke] [--out runs/bench-distill] [mcd bench-distill options]

Prints the markdown tables and writes OUT/bench.{md,json} and OUT/bench_pr_<steps>.png (one per step count).
"""

import sys

from sampler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-distill", *sys.argv[1:]]))
