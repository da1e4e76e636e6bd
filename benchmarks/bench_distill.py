"""Teacher vs masked consistency distillation vs the stochastic baseline (see sampler/bench_distill.py).

    python benchmarks/bench_distill.py [--smoke] [--out runs/bench-distill] [mcd bench-distill options]

Prints the markdown table and writes OUT/bench.{md,json} and OUT/bench_{nll,frontier}.png.
"""

import sys

from sampler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-distill", *sys.argv[1:]]))
