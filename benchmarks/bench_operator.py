"""Speed and accuracy of the masked duality operator α_K(ν), side by side with the usual approach.

The Diffusion Duality reference code integrates α_K(ν) = ∫ φ(z − ν) Φ(z)^{K−1} dz per point with
``scipy.integrate.quad`` and then looks values up in a nearest-neighbour table over ν. This script,
in one run and at one fixed K:

1. times `masked_alpha` (and the complement, derivative, log and inverse) on N points
   (median of repeats, cached per-K table warm) and per-point ``quad`` on a few hundred points,
   and prints evaluations per second and their ratio;
2. measures relative errors against a 30-digit mpmath reference at random ν (half uniform in
   [−30, 40], half where 10^-3 ≤ α ≤ 1 − 10^-3) for our functions, for ``quad`` and for a nearest-neighbour table of T nodes over [−30, 40]
   (table values exact: the best such a table can do).

Usage: python benchmarks/bench_operator.py [--vocab-size 50258] [--points 1000000] [--repeats 5]
       [--quad-points 300] [--mpmath-points 40] [--table-size 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import mpmath
import numpy as np
from scipy import integrate
from scipy.special import log_ndtr
from tqdm import tqdm

from theory import log_masked_alpha, masked_alpha, masked_alpha_deriv, nu_from_masked_alpha
from theory.operator import _mpmath_reference

NU_RANGE = (-30.0, 40.0)


def median_seconds(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def quad_alpha(nu: float, vocab_size: int) -> float:
    """α_K(ν) the reference-code way: one adaptive quad over the real line per point."""

    def integrand(z: float) -> float:
        return math.exp(-0.5 * (z - nu) ** 2 + (vocab_size - 1) * log_ndtr(z)) / math.sqrt(2 * math.pi)

    return integrate.quad(integrand, -np.inf, np.inf)[0]


def relative_errors(values: np.ndarray, exact: list) -> np.ndarray:
    with mpmath.workdps(30):
        return np.array(
            [float(abs(mpmath.mpf(float(v)) / e - 1)) if e > 0 else 0.0 for v, e in zip(values, exact)]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=50258)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quad-points", type=int, default=300)
    parser.add_argument("--mpmath-points", type=int, default=40)
    parser.add_argument("--table-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    k = args.vocab_size
    rng = np.random.default_rng(args.seed)
    nus = rng.uniform(*NU_RANGE, args.points)

    print(f"K = {k}, nu uniform in {NU_RANGE}, medians of {args.repeats} repeats")
    start = time.perf_counter()
    masked_alpha(nus[:1000], k)
    print(f"one-off table build for this K: {time.perf_counter() - start:.3f} s")

    alphas = masked_alpha(nus, k)
    timed = {
        "masked_alpha": lambda: masked_alpha(nus, k),
        "masked_alpha(complement=True)": lambda: masked_alpha(nus, k, complement=True),
        "masked_alpha_deriv": lambda: masked_alpha_deriv(nus, k),
        "log_masked_alpha": lambda: log_masked_alpha(nus, k),
        "nu_from_masked_alpha": lambda: nu_from_masked_alpha(alphas, k),
    }
    rates = {}
    for name, func in timed.items():
        rates[name] = args.points / median_seconds(func, args.repeats)
        print(f"{name:32s} {rates[name]:12.3e} evaluations/s  ({args.points} points per call)")

    quad_nus = nus[: args.quad_points]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)

        def run_quad() -> None:
            for nu in quad_nus:
                quad_alpha(float(nu), k)

        quad_rate = args.quad_points / median_seconds(run_quad, max(1, min(args.repeats, 3)))
    print(f"{'per-point scipy quad':32s} {quad_rate:12.3e} evaluations/s  ({args.quad_points} points per call)")
    print(f"speed ratio masked_alpha / quad: {rates['masked_alpha'] / quad_rate:.3g}x")

    # Accuracy against mpmath (30 digits).
    # Half the check points uniform over the range, half where 1e-3 <= alpha <= 1 - 1e-3.
    half = args.mpmath_points // 2
    mid_nus = nu_from_masked_alpha(rng.uniform(1e-3, 1 - 1e-3, args.mpmath_points - half), k)
    check_nus = np.sort(np.concatenate([rng.uniform(*NU_RANGE, half), mid_nus]))
    exact_alpha, exact_comp, exact_deriv = [], [], []
    with mpmath.workdps(30):
        for nu in tqdm(check_nus, desc="mpmath reference", leave=False):
            small_is_alpha = masked_alpha(float(nu), k) <= 0.5
            small = _mpmath_reference(float(nu), k, "alpha" if small_is_alpha else "complement")
            exact_alpha.append(small if small_is_alpha else 1 - small)
            exact_comp.append(1 - small if small_is_alpha else small)
            exact_deriv.append(_mpmath_reference(float(nu), k, "deriv"))

    def worst(values: np.ndarray, exact: list) -> float:
        keep = np.array([e >= mpmath.mpf("1e-300") for e in exact])
        return float(relative_errors(values[keep], [e for e, kk in zip(exact, keep) if kk]).max())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        quad_values = np.array([quad_alpha(float(nu), k) for nu in check_nus])
    table_nodes = np.linspace(*NU_RANGE, args.table_size)
    table_alpha = masked_alpha(table_nodes, k)
    nearest = np.clip(np.rint((check_nus - NU_RANGE[0]) / (table_nodes[1] - table_nodes[0])), 0, args.table_size - 1)
    nn_alpha = table_alpha[nearest.astype(int)]

    mid = np.array([1e-3 <= float(e) <= 1 - 1e-3 for e in exact_alpha])

    def both(values: np.ndarray, exact: list) -> str:
        in_mid = worst(values[mid], [e for e, m in zip(exact, mid) if m]) if mid.any() else float("nan")
        return f"{worst(values, exact):14.2e} {in_mid:16.2e}"

    print(f"\nworst relative error vs mpmath (30 digits) at {args.mpmath_points} random nu in {NU_RANGE}:")
    print(f"  {'':46s} {'all >= 1e-300':>14s} {'1e-3<=a<=1-1e-3':>16s}  ({int(mid.sum())} points)")
    rows = [
        ("masked_alpha", masked_alpha(check_nus, k), exact_alpha),
        ("masked_alpha(complement=True)", masked_alpha(check_nus, k, complement=True), exact_comp),
        ("masked_alpha_deriv", masked_alpha_deriv(check_nus, k), exact_deriv),
        ("per-point quad: alpha", quad_values, exact_alpha),
        ("per-point quad: 1 - alpha", 1.0 - quad_values, exact_comp),
        (f"{args.table_size}-node nearest-neighbour table: alpha", nn_alpha, exact_alpha),
        (f"{args.table_size}-node nearest-neighbour table: 1 - alpha", 1.0 - nn_alpha, exact_comp),
    ]
    for name, values, exact in rows:
        print(f"  {name:46s} {both(values, exact)}")
    back = masked_alpha(nu_from_masked_alpha(alphas, k), k)
    ok = alphas > 1e-300
    print(f"  inverse round trip over the {args.points} points: {np.max(np.abs(back[ok] / alphas[ok] - 1)):.2e}")


if __name__ == "__main__":
    main()
