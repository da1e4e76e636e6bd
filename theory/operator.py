"""The masked duality operator alpha_K(nu), its derivative, complement, logarithm and inverse.

For a vocabulary of K >= 2 tokens and a latent signal-to-noise ratio nu, let
w = nu·e_k + ε with ε ~ N(0, I_K). The clean token survives the argmax projection
with probability

    α_K(ν) = P(w_k > max_{j≠k} w_j) = ∫ φ(z − ν) Φ(z)^{K−1} dz = P(Y < ν),

where Y = max_{j≠k} ε_j − ε_k. Its complement and derivative have positive
integrands as well (no cancellation anywhere):

    1 − α_K(ν) = ∫ φ(z − ν) (1 − Φ(z)^{K−1}) dz,
    α'_K(ν)    = (K − 1) ∫ φ(z − ν) φ(z) Φ(z)^{K−2} dz.

Numerics
--------
*Direct path (any K, any finite ν).* All three integrands are log-concave in z (Y is a
sum of independent log-concave variables), with log-curvature at least 1. For each
point the mode z* of the log-integrand is found by bracketed Newton; the two points
where it has dropped by 40 below its peak (neglected mass < e^-40 relative) by Newton,
monotone by concavity and within √80 of z*. The integral is Gauss–Legendre (20 nodes a
panel) on panels split at z*, half-way to each end, and around the location z_G of the
max of K − 1 normals ((K − 1)Φ(−z_G) = 1, spread 1/z_G), where 1 − Φ^{K−1} bends sharply;
the sum is taken in log space. Everything is in log space: ``scipy.special.log_ndtr``,
the Mills ratio φ/Φ = √(2/π)/erfcx(−z/√2), 1 − Φ^{K−1} = −expm1((K − 1)·log Φ(z)).
Measured against 30-digit mpmath over ν ∈ [−30, 40], K ∈ {2, …, 10^7}: relative error
≲ 1e-13 for α, 1 − α and α'.

*Tails.* Nothing is truncated: `log_masked_alpha` returns the log of values far below
the float64 range with full relative precision of the log, and the linear-scale functions
underflow gracefully (subnormals, then 0) where the value is below ~1e-308. For α and 1 − α
the smaller of the two integrals is computed and the other is 1 minus it (so they sum to 1
to an ulp). For ν ≥ 60, 1 − α = (K − 1)Φ(−ν/√2) and α' = (K − 1)φ(ν/√2)/√2 (inclusion–
exclusion; the next term is a factor ~K·e^{−ν²/12} < 1e-120 smaller); for K = 2 these are
exact for all ν. For ν < −10^6, where log α ≈ −ν²(K − 1)/(2K) is so large that quadrature
in log space would lose its relative precision, log α and log α' are the Laplace
approximation at the mode (relative error of the log O(ν^-2)). |ν| > 1e150 is treated as ±∞.

*Tables (speed at a fixed K).* Once a K has been asked for ≥ 256 points (over all calls),
a piecewise polynomial of f(ν) = log α(ν) left of (about) the median of Y and
f(ν) = log(1 − α(ν)) right of it, and a second one of log α'(ν), is built from the direct
path (degree-15 Chebyshev interpolation on unit panels, bisected where the Chebyshev tail
is not negligible; ~0.1 s) and cached per K (32 most recent). It covers the ν range where
the values are above ~1e-323 and is evaluated with Horner's rule: ~5–10 million points a
second on one core, table-vs-quadrature difference ≲ 1e-11 in the log (relative in the value).

*Exact cases.* α_K(0) = 1/K, α(−∞) = 0, α(+∞) = 1 and α_2(ν) = Φ(ν/√2) are returned as such.

*Inverse.* Newton in log α (a below α at the median) or log(1 − α) (above), both concave in
ν, started from monotone interpolation of fine samples of the table and safeguarded by their
bracket (without a table: from ν = 0, bracketed in [−90, 0] or [0, 90]). With
``complement=True`` it takes 1 − α, for α too close to 1 to be represented.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtri

from ._arrays import (
    check_no_nan,
    check_probability,
    check_vocab_size,
    differentiable,
    result_kind,
    to_float64,
    tracks_grad,
)

__all__ = [
    "masked_alpha",
    "masked_alpha_deriv",
    "log_masked_alpha",
    "nu_from_masked_alpha",
    "uniform_alpha",
]

ArrayLike = Any  # float | np.ndarray | torch.Tensor (torch is not imported here)

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# Integrand kinds.
_ALPHA = 0
_COMPLEMENT = 1
_DERIV = 2

# Below the peak by this much in log space, the dropped mass is < e^-40 ≈ 4e-18 relative.
_DROP = 40.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(20)
# Panel edges on [0, 1] (fraction of the way from the mode to an end point).
_PANEL_EDGES = np.array([0.0, 0.5, 1.0])
# In units of the spread of the max of K − 1 normals, around its location (see below).
_GUMBEL_EDGES = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0])
_CHUNK = 8192
_NU_HUGE = 1e150
_NU_UPPER_TAIL = 60.0
_NU_LAPLACE = 1e6


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 − e^x) for x ≤ 0, accurate at both ends."""
    with np.errstate(divide="ignore"):  # np.where evaluates both branches; the unused one may hit log(0)
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _mills(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r = φ(z)/Φ(z) and r' = −r(z + r), accurate for all z (no exp(log φ − log Φ) cancellation)."""
    r = _SQRT_2_OVER_PI / erfcx(-z / _SQRT2)
    z_plus_r = z + r
    # For z → −∞, z + r ≈ −1/z cancels: use its asymptotic series there (relative error < 1e-8).
    far = z < -30.0
    if far.any():
        z_far = z[far]
        inv2 = 1.0 / (z_far * z_far)
        z_plus_r[far] = -(1.0 - inv2 * (2.0 - 10.0 * inv2)) / z_far
    return r, -r * z_plus_r


def _log_integrand(z: np.ndarray, nu: np.ndarray, km1: np.ndarray, kind: int, derivs: bool = True):
    """Log-integrand g(z) and, if `derivs`, its first two z-derivatives (g'' ≤ −1 enforced, its true bound)."""
    log_cdf = log_ndtr(z)
    g = -0.5 * (z - nu) ** 2 - _LOG_SQRT_2PI
    if kind == _ALPHA:
        a0 = km1 * log_cdf
    elif kind == _DERIV:
        a0 = np.log(km1) - 0.5 * z * z - _LOG_SQRT_2PI + (km1 - 1.0) * log_cdf
    else:
        log_upper = log_ndtr(-z)
        # 1 − Φ^{K−1} = −expm1((K−1) log Φ); once Φ(−z) underflows (z > 37) it is (K−1)Φ(−z).
        a0 = np.where(log_upper < -700.0, np.log(km1) + log_upper, _log1mexp(km1 * log_cdf))
    if not derivs:
        return g + a0, None, None
    mills, mills_deriv = _mills(z)
    g1 = nu - z
    if kind == _ALPHA:
        a1 = km1 * mills
        a2 = km1 * mills_deriv
    elif kind == _DERIV:
        a1 = -z + (km1 - 1.0) * mills
        a2 = -1.0 + (km1 - 1.0) * mills_deriv
    else:
        a1 = -np.exp(np.log(km1) - 0.5 * z * z - _LOG_SQRT_2PI + (km1 - 1.0) * log_cdf - a0)
        a2 = a1 * (-z + (km1 - 1.0) * mills - a1)
    return g + a0, g1 + a1, np.minimum(-1.0 + a2, -1.0)


def _find_mode(nu: np.ndarray, km1: np.ndarray, kind: int) -> np.ndarray:
    """Mode of the (concave) log-integrand by Newton, safeguarded by bisection in a bracket."""
    z = nu.copy() if kind != _DERIV else 0.5 * nu
    lo = np.full_like(z, -np.inf)
    hi = np.full_like(z, np.inf)
    active = np.arange(z.size)  # iterate only on points not yet converged
    for _ in range(200):
        za, lo_a, hi_a = z[active], lo[active], hi[active]
        _, g1, g2 = _log_integrand(za, nu[active], km1[active], kind)
        lo_a = np.where(g1 > 0, np.maximum(lo_a, za), lo_a)
        hi_a = np.where(g1 <= 0, np.minimum(hi_a, za), hi_a)
        z_new = za - g1 / g2
        # Newton iterates become bracket ends, so a step onto an end would cycle: bisect.
        outside = ~((z_new > lo_a) & (z_new < hi_a)) & np.isfinite(lo_a) & np.isfinite(hi_a)
        outside &= np.abs(z_new - za) > 1e-15 * (1.0 + np.abs(za))
        z_new = np.where(outside, 0.5 * (lo_a + hi_a), z_new)
        # |step|·sqrt(curvature) is the step in units of the peak width.
        done = np.abs(z_new - za) * np.sqrt(-g2) < 1e-6
        z[active], lo[active], hi[active] = z_new, lo_a, hi_a
        active = active[~done]
        if active.size == 0:
            break
    return z


def _find_end(z_mode, g_mode, nu, km1, kind, side: float) -> np.ndarray:
    """Point on `side` (±1) of the mode where the log-integrand is `_DROP` below its peak."""
    _, _, g2 = _log_integrand(z_mode, nu, km1, kind)
    max_dist = math.sqrt(2.0 * _DROP) + 1.0  # curvature ≥ 1 everywhere
    dist = np.minimum(np.sqrt(2.0 * _DROP / -g2), max_dist)
    active = np.arange(dist.size)
    for _ in range(60):
        d = dist[active]
        g, g1, _ = _log_integrand(z_mode[active] + side * d, nu[active], km1[active], kind)
        h = g - (g_mode[active] - _DROP)
        slope = side * g1  # d h / d dist, negative beyond the mode
        done = (h <= 0.0) & (h > -1.0)
        new_d = np.clip(d - h / np.minimum(slope, -1e-300), 0.5 * d, max_dist)
        dist[active] = np.where(done, d, new_d)
        active = active[~done]
        if active.size == 0:
            break
    return z_mode + side * dist


def _direct_log_chunk(nu: np.ndarray, km1: np.ndarray, kind: int) -> np.ndarray:
    z_mode = _find_mode(nu, km1, kind)
    g_mode, _, _ = _log_integrand(z_mode, nu, km1, kind)
    z_left = _find_end(z_mode, g_mode, nu, km1, kind, -1.0)
    z_right = _find_end(z_mode, g_mode, nu, km1, kind, 1.0)
    # The max of K − 1 normals sits near z_gumbel, (K − 1)Φ(−z_gumbel) = 1, with spread
    # ~1/z_gumbel; there 1 − Φ^{K−1} turns from ≈ 1 to ≈ (K − 1)Φ(−z), a sharp bend of the
    # log-integrand that the quadrature panels must not straddle.
    z_gumbel = -ndtri(1.0 / np.maximum(km1, 2.0))
    spread = 1.0 / np.maximum(z_gumbel, 1.0)
    edges = np.concatenate(
        [
            z_mode[:, None] + (z_left - z_mode)[:, None] * _PANEL_EDGES[None, :],
            z_mode[:, None] + (z_right - z_mode)[:, None] * _PANEL_EDGES[None, 1:],
            np.clip(
                z_gumbel[:, None] + spread[:, None] * _GUMBEL_EDGES[None, :], z_left[:, None], z_right[:, None]
            ),
        ],
        axis=1,
    )
    edges.sort(axis=1)
    left, right = edges[:, :-1], edges[:, 1:]
    half = 0.5 * (right - left)
    nodes = (0.5 * (left + right))[:, :, None] + half[:, :, None] * _GL_NODES
    shape = nodes.shape
    g, _, _ = _log_integrand(nodes.reshape(shape[0], -1), nu[:, None], km1[:, None], kind, derivs=False)
    contrib = np.exp(g.reshape(shape) - g_mode[:, None, None]) @ _GL_WEIGHTS
    return g_mode + np.log((half * contrib).sum(axis=1))


def _laplace_log(nu: np.ndarray, km1: np.ndarray, kind: int) -> np.ndarray:
    """Laplace approximation g(z*) + log √(2π/|g''(z*)|) of the log-integral."""
    z_mode = _find_mode(nu, km1, kind)
    g, _, g2 = _log_integrand(z_mode, nu, km1, kind)
    return g + 0.5 * np.log(2.0 * np.pi / -g2)


def _direct_log(nu: np.ndarray, km1: np.ndarray, kind: int) -> np.ndarray:
    """log of α, 1 − α or α' at finite ν (1-D arrays of equal length), by quadrature."""
    out = np.empty_like(nu)
    for start in range(0, nu.size, _CHUNK):
        sl = slice(start, start + _CHUNK)
        out[sl] = _direct_log_chunk(nu[sl], km1[sl], kind)
    return out


# ---------------------------------------------------------------------------
# Evaluation front end: validation, exact cases, table or direct path.


def _prepare(x: ArrayLike, vocab_size: ArrayLike, x_name: str = "nu", check: Any = check_no_nan):
    """Flat float64 copies of x (validated by `check`) and K broadcast together, and their shape."""
    x_arr = to_float64(x, x_name)
    check(x_arr, x_name)
    k_arr = check_vocab_size(vocab_size)
    try:
        x_b, k_b = np.broadcast_arrays(x_arr, k_arr)
    except ValueError as err:
        raise ValueError(f"{x_name} of shape {x_arr.shape} and vocab_size of shape {k_arr.shape} do not broadcast") from err
    return np.ascontiguousarray(x_b).reshape(-1), np.ascontiguousarray(k_b).reshape(-1), x_b.shape


def _operator(function: str, x: ArrayLike, vocab_size: ArrayLike, values: Any, slope: str | None,
              x_name: str = "nu", check: Any = check_no_nan) -> Any:
    """Front end of the public functions: validate, evaluate `values(x_flat, k_flat)`, return the
    inputs' kind.  A torch tensor x that requires grad gets a result autograd can differentiate,
    with backward slope `_SLOPES[slope](x_flat, k_flat, y_flat)` = dy/dx (None: refused by name)."""
    if tracks_grad(vocab_size):
        raise ValueError("vocab_size requires grad, but α_K is not differentiable in the integer K; pass vocab_size.detach()")

    def evaluate(x_value: ArrayLike) -> Any:
        x_f, k_f, shape = _prepare(x_value, vocab_size, x_name, check)
        return result_kind(x_value, vocab_size)(values(x_f, k_f).reshape(shape))

    if not tracks_grad(x):
        return evaluate(x)
    if slope is None:
        raise ValueError(f"{x_name} requires grad, but {function} has no derivative implemented; pass {x_name}.detach()")

    def slope_at(x_value: ArrayLike, y: Any) -> Any:
        x_f, k_f, shape = _prepare(x_value, vocab_size, x_name, check)
        y_f = y.detach().to("cpu").numpy().reshape(-1)
        with np.errstate(all="ignore"):
            return result_kind(x_value)(_SLOPES[slope](x_f, k_f, y_f).reshape(shape))

    return differentiable(x, evaluate, slope_at)


def _log_values(nu: np.ndarray, k: np.ndarray, kind: int) -> np.ndarray:
    """log α, log(1 − α) or log α' at flat arrays ν, K (ν may be ±inf, no NaN)."""
    out = np.empty_like(nu)
    with np.errstate(all="ignore"):
        # Beyond ±1e150, ν² overflows: the values are those at ±inf to float64 precision.
        huge = ~(np.abs(nu) <= _NU_HUGE)
        if huge.any():
            if kind == _DERIV:
                out[huge] = -np.inf
            else:
                upper = (nu[huge] > 0) if kind == _ALPHA else (nu[huge] < 0)
                out[huge] = np.where(upper, 0.0, -np.inf)
        zero = nu == 0
        if zero.any() and kind != _DERIV:
            out[zero] = -np.log(k[zero]) if kind == _ALPHA else np.log1p(-1.0 / k[zero])
        # 1 − α = (K − 1)Φ(−ν/√2) exactly for K = 2 and to within a factor 1 − O(K e^{−ν²/12})
        # (inclusion–exclusion) for large ν; likewise α' = (K − 1)φ(ν/√2)/√2.
        closed = ((k == 2) | (nu >= _NU_UPPER_TAIL)) & ~huge
        if kind != _DERIV:
            closed &= ~zero
        if closed.any():
            x = nu[closed] / _SQRT2
            log_km1 = np.log(k[closed] - 1.0)
            if kind == _DERIV:
                out[closed] = log_km1 - 0.5 * x * x - _LOG_SQRT_2PI - 0.5 * math.log(2.0)
            else:
                log_c = log_km1 + log_ndtr(-x)
                if kind == _COMPLEMENT:
                    out[closed] = log_c
                else:
                    two = k[closed] == 2
                    out[closed] = np.where(two, log_ndtr(x), _log1mexp(np.minimum(log_c, 0.0)))
        # Far left the log-integrand is ~ −ν²/2 in size and quadrature in log space loses its
        # relative precision; its Laplace approximation is exact to O(1/ν²) relative there.
        far_left = (nu < -_NU_LAPLACE) & ~huge
        if far_left.any():
            log_alpha = _laplace_log(nu[far_left], k[far_left] - 1.0, _ALPHA if kind != _DERIV else kind)
            out[far_left] = _log1mexp(np.minimum(log_alpha, 0.0)) if kind == _COMPLEMENT else log_alpha
        rest = ~(huge | closed | zero | far_left) if kind != _DERIV else ~(huge | closed | far_left)
        if rest.all():
            return _evaluate(nu, k, kind)
        idx = np.flatnonzero(rest)
        if idx.size:
            out[idx] = _evaluate(nu[idx], k[idx], kind)
    return out


# ---------------------------------------------------------------------------
# Per-K tables: piecewise polynomials of log α | log(1 − α) and of log α'.

_DEGREE = 15
_CELLS_PER_UNIT = 32  # finest panel width 1/32; panel edges lie on this dyadic grid
_TABLE_CACHE_SIZE = 32
_TABLE_MIN_POINTS = 256  # points seen for one K (over all calls) before its table is built
_LOG_UNDERFLOW = -745.2  # log of the smallest subnormal float64
_GRID_HALF_WIDTH = 64.0

_cheb_t = np.cos(np.pi * (np.arange(_DEGREE + 1) + 0.5) / (_DEGREE + 1))  # nodes in [-1, 1]
# Values at the nodes -> Chebyshev coefficients (discrete cosine transform).
_values_to_cheb = (
    2.0
    / (_DEGREE + 1)
    * np.cos(np.outer(np.arange(_DEGREE + 1), np.pi * (np.arange(_DEGREE + 1) + 0.5) / (_DEGREE + 1)))
)
_values_to_cheb[0] *= 0.5
# Chebyshev coefficients -> monomial coefficients in t (column j holds T_j's).
_cheb_to_mono = np.zeros((_DEGREE + 1, _DEGREE + 1))
for _j in range(_DEGREE + 1):
    _mono_j = np.polynomial.chebyshev.cheb2poly(np.eye(_DEGREE + 1)[_j])
    _cheb_to_mono[: _mono_j.size, _j] = _mono_j


class _PiecewisePoly:
    """Piecewise polynomial on [lo, hi] with panels aligned to a 1/_CELLS_PER_UNIT grid."""

    def __init__(self, lo: float, hi: float, panels: list[tuple[float, float]], values: np.ndarray):
        self.lo, self.hi = lo, hi
        order = np.argsort([a for a, _ in panels])
        left = np.array([panels[i][0] for i in order])
        right = np.array([panels[i][1] for i in order])
        self.center = 0.5 * (left + right)
        self.inv_half = 2.0 / (right - left)
        mono = (_cheb_to_mono @ (_values_to_cheb @ values[order].T)).T  # (panels, degree+1)
        self.coef = [np.ascontiguousarray(mono[:, j]) for j in range(_DEGREE + 1)]
        num_cells = int(round((hi - lo) * _CELLS_PER_UNIT))
        cell_panel = np.empty(num_cells, dtype=np.intp)
        for p, (a, b) in enumerate(zip(left, right)):
            i0 = int(round((a - lo) * _CELLS_PER_UNIT))
            i1 = int(round((b - lo) * _CELLS_PER_UNIT))
            cell_panel[i0:i1] = p
        self.cell_panel = cell_panel

    def __call__(self, nu: np.ndarray) -> np.ndarray:
        """Values at ν in [lo, hi] (callers keep ν inside)."""
        cell = ((nu - self.lo) * _CELLS_PER_UNIT).astype(np.intp)
        np.clip(cell, 0, self.cell_panel.size - 1, out=cell)
        panel = self.cell_panel.take(cell)
        t = (nu - self.center.take(panel)) * self.inv_half.take(panel)
        acc = self.coef[_DEGREE].take(panel)
        for j in range(_DEGREE - 1, -1, -1):
            acc *= t
            acc += self.coef[j].take(panel)
        return acc


def _fit_panels(func, cells: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Bisect panels until the Chebyshev tail of `func` on each is below tolerance."""
    done_panels: list[tuple[float, float]] = []
    done_values: list[np.ndarray] = []
    todo = cells
    min_width = 1.0 / _CELLS_PER_UNIT
    while todo:
        a = np.array([c[0] for c in todo])
        b = np.array([c[1] for c in todo])
        nodes = 0.5 * (a + b)[:, None] + 0.5 * (b - a)[:, None] * _cheb_t
        vals = func(nodes.reshape(-1)).reshape(nodes.shape)
        cheb = vals @ _values_to_cheb.T
        tail = np.abs(cheb[:, -3:]).sum(axis=1)
        tol = 1e-13 + 1e-14 * np.abs(vals).max(axis=1)
        next_todo = []
        for i, (lo, hi) in enumerate(todo):
            width = hi - lo
            if tail[i] <= tol[i] or width <= min_width * 1.0000001:
                done_panels.append((lo, hi))
                done_values.append(vals[i])
            else:
                mid = lo + 0.5 * width
                next_todo += [(lo, mid), (mid, hi)]
        todo = next_todo
    return done_panels, np.array(done_values)


class _Table:
    """Cached fast evaluation for one vocabulary size K (built from the direct path)."""

    def __init__(self, k: float):
        km1 = k - 1.0
        grid = np.arange(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH + 0.25, 0.5)
        log_a = _direct_log(grid, np.full_like(grid, km1), _ALPHA)
        log_c = _direct_log(grid, np.full_like(grid, km1), _COMPLEMENT)
        # Split at an integer near the median of Y, so both sides are well conditioned.
        self.split = float(np.round(grid[np.argmin(np.abs(log_a - log_c))]))
        under_lo = grid[log_a < _LOG_UNDERFLOW]
        under_hi = grid[log_c < _LOG_UNDERFLOW]
        self.lo = float(np.floor(under_lo.max())) if under_lo.size else -_GRID_HALF_WIDTH
        self.hi = float(np.ceil(under_hi.min())) if under_hi.size else _GRID_HALF_WIDTH
        self.lo = min(self.lo, self.split - 1.0)
        self.hi = max(self.hi, self.split + 1.0)
        cells = [(float(x), float(x) + 1.0) for x in np.arange(self.lo, self.hi)]

        def main(nu: np.ndarray) -> np.ndarray:
            out = np.empty_like(nu)
            left = nu < self.split
            out[left] = _direct_log(nu[left], np.full(left.sum(), km1), _ALPHA)
            out[~left] = _direct_log(nu[~left], np.full((~left).sum(), km1), _COMPLEMENT)
            return np.minimum(out, 0.0)

        self.main = _PiecewisePoly(self.lo, self.hi, *_fit_panels(main, cells))
        self.deriv = _PiecewisePoly(
            self.lo, self.hi, *_fit_panels(lambda nu: _direct_log(nu, np.full_like(nu, km1), _DERIV), cells)
        )
        # Fine monotone samples of the two halves, for the inverse's starting bracket.
        self.inv_grid = np.arange(self.lo, self.hi + 1e-9, 1.0 / 8)
        self.inv_vals = self.main(self.inv_grid)

    def left_of_split(self, nu: np.ndarray) -> np.ndarray:
        """Where `main` holds log α (else log(1 − α)): decided by the same rounded cell index the
        lookup uses, since ν a few ulps below the split rounds into the right-hand cell."""
        return (nu - self.lo) * _CELLS_PER_UNIT < (self.split - self.lo) * _CELLS_PER_UNIT

    def log_values(self, nu: np.ndarray, kind: int) -> np.ndarray:
        """kind's log value at ν; NaN where ν is outside [lo, hi] (the caller fills those)."""
        inside = (nu >= self.lo) & (nu <= self.hi)
        out = np.full_like(nu, np.nan)
        x = nu[inside] if not inside.all() else nu
        if kind == _DERIV:
            vals = self.deriv(x)
        else:
            f = self.main(x)
            left = self.left_of_split(x)
            # f is log α on the left, log(1 − α) on the right; the other one is log1mexp(f).
            other = ~left if kind == _ALPHA else left
            vals = f
            if other.any():
                vals[other] = _log1mexp(np.minimum(f[other], 0.0))
        if inside.all():
            return vals
        out[inside] = vals
        return out


_tables: OrderedDict[float, _Table] = OrderedDict()
_points_seen: dict[float, int] = {}


def _table_for(k: float, num_points: int) -> _Table | None:
    table = _tables.get(k)
    if table is not None:
        _tables.move_to_end(k)
        return table
    if len(_points_seen) > 100_000:  # many distinct K, each seen a few times
        _points_seen.clear()
    seen = _points_seen.get(k, 0) + num_points
    _points_seen[k] = seen
    if seen < _TABLE_MIN_POINTS:
        return None
    table = _Table(k)
    _tables[k] = table
    while len(_tables) > _TABLE_CACHE_SIZE:
        _tables.popitem(last=False)
    return table


def _direct_log_consistent(nu: np.ndarray, k_value: float, kind: int) -> np.ndarray:
    """Direct path; α and 1 − α both come from the smaller of the two integrals (so they sum to 1)."""
    km1 = np.full_like(nu, k_value - 1.0)
    vals = _direct_log(nu, km1, kind)
    if kind != _DERIV:
        large = vals > -math.log(2.0)
        if large.any():
            other = _direct_log(nu[large], km1[large], _COMPLEMENT if kind == _ALPHA else _ALPHA)
            swap = other <= -math.log(2.0)
            vals[np.flatnonzero(large)[swap]] = _log1mexp(other[swap])
    return vals


def _evaluate(nu: np.ndarray, k: np.ndarray, kind: int) -> np.ndarray:
    """Log values at finite ν: per distinct K, the table where it applies, else the direct path."""
    out = np.empty_like(nu)
    if nu.size == 0:
        return out
    k_values = k[:1] if (k == k[0]).all() else np.unique(k)
    for k_value in k_values:
        sel = slice(None) if k_values.size == 1 else np.flatnonzero(k == k_value)
        nu_k = nu[sel]
        table = _table_for(float(k_value), nu_k.size)
        if table is None:
            vals = _direct_log_consistent(nu_k, float(k_value), kind)
        else:
            vals = table.log_values(nu_k, kind)
            missing = np.isnan(vals)
            if missing.any():
                vals[missing] = _direct_log_consistent(nu_k[missing], float(k_value), kind)
        out[sel] = vals if kind == _DERIV else np.minimum(vals, 0.0)
    return out


def log_masked_alpha(nu: ArrayLike, vocab_size: ArrayLike, complement: bool = False) -> Any:
    """log α_K(ν), or log(1 − α_K(ν)) when `complement`, with full relative precision in the tails.

    α_K(ν) = ∫ φ(z − ν) Φ(z)^{K−1} dz; broadcasting over `nu` and `vocab_size`; inputs by the rule
    of `theory._arrays` (numbers, numpy arrays, lists, torch tensors), the same kind out (float64).
    Differentiable in a torch `nu`: d log α/dν = α'/α, d log(1 − α)/dν = −α'/(1 − α) (in log space).
    """
    kind = _COMPLEMENT if complement else _ALPHA
    return _operator("log_masked_alpha", nu, vocab_size, lambda x, k: _log_values(x, k, kind),
                     "log_complement" if complement else "log")


def masked_alpha(nu: ArrayLike, vocab_size: ArrayLike, complement: bool = False) -> Any:
    """α_K(ν) = P(ν + ε_k > max_{j≠k} ε_j) = ∫ φ(z − ν) Φ(z)^{K−1} dz, ε ~ N(0, I_K).

    With `complement`, 1 − α_K(ν) = ∫ φ(z − ν)(1 − Φ(z)^{K−1}) dz computed without
    cancellation. Relative error ≲ 1e-12 wherever the value is a normal float64;
    smaller values underflow gracefully to 0 (their logarithm is exact in
    `log_masked_alpha`). Broadcasts over `nu` (any real, ±inf allowed) and
    `vocab_size` (integers ≥ 2). Inputs: numbers, numpy arrays, lists or tuples (numpy out),
    torch tensors (float64 tensor out); anything else is a ValueError naming the argument.
    A torch `nu` that requires grad gives a differentiable result: dα/dν = α'(ν)
    (`masked_alpha_deriv`), d(1 − α)/dν = −α'(ν).
    """
    return _operator("masked_alpha", nu, vocab_size, lambda x, k: _alpha_values(x, k, complement),
                     "complement" if complement else "alpha")


def _alpha_values(nu: np.ndarray, k: np.ndarray, complement: bool) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = np.exp(_log_values(nu, k, _COMPLEMENT if complement else _ALPHA))
        zero = nu == 0
        if zero.any():  # exactly 1/K (exp(−log K) may be off by an ulp)
            out[zero] = 1.0 - 1.0 / k[zero] if complement else 1.0 / k[zero]
    return out


def masked_alpha_deriv(nu: ArrayLike, vocab_size: ArrayLike) -> Any:
    """dα_K/dν = (K − 1) ∫ φ(z − ν) φ(z) Φ(z)^{K−2} dz (the density of Y at ν).

    For K = 2 this is φ(ν/√2)/√2. Broadcasting and array kinds as in `masked_alpha`; not itself
    differentiable (a `nu` that requires grad is refused: α'' is not implemented).
    """
    return _operator("masked_alpha_deriv", nu, vocab_size, _deriv_values, None)


def _deriv_values(nu: np.ndarray, k: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.exp(_log_values(nu, k, _DERIV))


def uniform_alpha(nu: ArrayLike, vocab_size: ArrayLike) -> Any:
    """Uniform-state (argmax) schedule (K·α_K(ν) − 1)/(K − 1) of the Diffusion Duality work.

    Computed as 1 − K(1 − α)/(K − 1) where α > 1/2, so it is accurate near 1; exactly 0 at
    ν = 0. Near its zero crossing the error is absolute (~1e-16·K/(K − 1)), not relative.
    Broadcasting and array kinds as in `masked_alpha`; differentiable: d/dν = K·α'(ν)/(K − 1).
    """
    return _operator("uniform_alpha", nu, vocab_size, _uniform_values, "uniform")


def _uniform_values(nu: np.ndarray, k: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        a = np.exp(_log_values(nu, k, _ALPHA))
        upper = a > 0.5
        out = (k * a - 1.0) / (k - 1.0)
        if upper.any():
            one_minus = np.exp(_log_values(nu[upper], k[upper], _COMPLEMENT))
            out[upper] = 1.0 - k[upper] * one_minus / (k[upper] - 1.0)
        out[nu == 0] = 0.0  # α_K(0) = 1/K exactly
    return out


def nu_from_masked_alpha(alpha: ArrayLike, vocab_size: ArrayLike, complement: bool = False) -> Any:
    """The inverse ν = α_K⁻¹(a) for a in [0, 1]: 0 → −inf, 1 → +inf, 1/K → 0.

    With `complement`, the argument is 1 − a (so that a within 1e-16 of 1 keeps its relative
    accuracy): ν with 1 − α_K(ν) equal to it. Solved by Newton in log α (below the median of
    Y) or log(1 − α) (above it), both concave in ν; round trip relative error ≲ 1e-12.
    Broadcasting and array kinds as in `masked_alpha`; differentiable in a torch `alpha`:
    dν/da = 1/α'(ν) (−1/α'(ν) for the complement; +inf at the ends a = 0, 1).
    """
    return _operator("nu_from_masked_alpha", alpha, vocab_size, lambda a, k: _inverse_values(a, k, complement),
                     "inverse_complement" if complement else "inverse", "alpha", check_probability)


def _inverse_values(a: np.ndarray, k: np.ndarray, complement: bool) -> np.ndarray:
    with np.errstate(all="ignore"):
        if complement:
            return _inverse(1.0 - a, a, a == 1.0 - 1.0 / k, k)
        return _inverse(a, 1.0 - a, a == 1.0 / k, k)


# Backward slopes dy/dx(x, K, y) of the public functions, on flat float64 arrays (y: the forward
# values).  All from log α' (no cancellation): a dict so that tests can plant a wrong one.
def _alpha_slope(nu: np.ndarray, k: np.ndarray, _: np.ndarray) -> np.ndarray:
    return np.exp(_log_values(nu, k, _DERIV))


def _log_slope(sign: float) -> Any:
    """d log α/dν = α'/α = exp(log α' − log α) (sign −1: d log(1 − α)/dν with y = log(1 − α));
    ±inf where y = −inf (α → 0 as ν → −inf, 1 − α → 0 as ν → +inf)."""

    def slope(nu: np.ndarray, k: np.ndarray, log_value: np.ndarray) -> np.ndarray:
        out = sign * np.exp(_log_values(nu, k, _DERIV) - log_value)
        return np.where(log_value == -np.inf, sign * np.inf, out)

    return slope


_SLOPES = {
    "alpha": _alpha_slope,
    "complement": lambda nu, k, y: -_alpha_slope(nu, k, y),
    "log": _log_slope(1.0),
    "log_complement": _log_slope(-1.0),
    "uniform": lambda nu, k, y: k / (k - 1.0) * _alpha_slope(nu, k, y),
    "inverse": lambda a, k, nu: np.exp(-_log_values(nu, k, _DERIV)),
    "inverse_complement": lambda c, k, nu: -np.exp(-_log_values(nu, k, _DERIV)),
}


def _inverse(a: np.ndarray, c: np.ndarray, exact_zero: np.ndarray, k: np.ndarray) -> np.ndarray:
    """ν with α_K(ν) = a and 1 − α_K(ν) = c, of which the smaller one is exact (the other rounded)."""
    log_a = np.where(a <= 0.5, np.log(a), np.log1p(-c))
    log_c = np.where(c <= 0.5, np.log(c), np.log1p(-a))
    out = np.empty_like(log_a)
    out[log_a == -np.inf] = -np.inf
    out[log_c == -np.inf] = np.inf
    out[exact_zero] = 0.0
    interior = (log_a > -np.inf) & (log_c > -np.inf) & ~exact_zero
    two = (k == 2) & interior
    if two.any():
        lower = log_a[two] <= log_c[two]
        out[two] = _SQRT2 * np.where(lower, ndtri(a[two]), -ndtri(c[two]))
    rest = np.flatnonzero(interior & ~two)
    if rest.size:
        la, lc, k_rest = log_a[rest], log_c[rest], k[rest]
        nu_rest = np.empty_like(la)
        for k_value in np.unique(k_rest):
            sel = np.flatnonzero(k_rest == k_value)
            # The inverse costs ~10 evaluations a point: build the table sooner.
            table = _table_for(float(k_value), 8 * sel.size)
            if table is None:
                nu_rest[sel] = _newton_inverse(la[sel], lc[sel], k_rest[sel])
            else:
                nu_rest[sel] = _table_inverse(table, la[sel], lc[sel], k_rest[sel])
        out[rest] = nu_rest
    return out


def _newton_steps(nu, lo, hi, target, lower, log_f, log_deriv, max_iter: int) -> np.ndarray:
    """Newton on f(ν) = target, f = log α where `lower` else log(1 − α), safeguarded by [lo, hi].

    `log_f(x, lower, idx)` and `log_deriv(x, idx)` evaluate at the points `idx` still iterating.
    """
    nu, lo, hi = nu.copy(), lo.copy(), hi.copy()
    active = np.arange(nu.size)
    for _ in range(max_iter):
        x, low, lo_a, hi_a = nu[active], lower[active], lo[active], hi[active]
        f = log_f(x, low, active)
        slope = np.exp(log_deriv(x, active) - f)
        slope = np.where(low, slope, -slope)
        h = f - target[active]
        right_of_root = np.where(low, h > 0, h < 0)
        hi_a = np.where(right_of_root, np.minimum(hi_a, x), hi_a)
        lo_a = np.where(right_of_root, lo_a, np.maximum(lo_a, x))
        x_new = x - h / slope
        bad = ~((x_new > lo_a) & (x_new < hi_a)) | ~np.isfinite(x_new)
        tiny = np.abs(x_new - x) <= 1e-15 * np.maximum(1.0, np.abs(x))
        x_new = np.where(bad & ~tiny, 0.5 * (lo_a + hi_a), x_new)
        converged = (np.abs(x_new - x) <= 1e-14 * np.maximum(1.0, np.abs(x))) | (h == 0)
        nu[active] = np.where(h == 0, x, x_new)
        lo[active], hi[active] = lo_a, hi_a
        active = active[~converged]
        if active.size == 0:
            break
    return nu


def _table_inverse(table: "_Table", log_a: np.ndarray, log_c: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Newton in the table, from a bracket found on its fine monotone samples."""
    grid, vals = table.inv_grid, table.inv_vals
    left_part = grid < table.split
    log_alpha_split = float(_log1mexp(np.minimum(vals[~left_part][:1], 0.0))[0])
    lower = log_a < log_alpha_split
    target = np.where(lower, log_a, log_c)
    # Left of the split the samples (log α) increase, right of it (log(1 − α)) decrease.
    g_left = np.append(grid[left_part], table.split)
    v_left = np.append(vals[left_part], log_alpha_split)
    g_right, v_right = grid[~left_part][::-1], vals[~left_part][::-1]
    nu = np.empty_like(log_a)
    lo = np.empty_like(log_a)
    hi = np.empty_like(log_a)
    for side, (g_side, v_side) in ((True, (g_left, v_left)), (False, (g_right, v_right))):
        sel = lower == side
        i = np.clip(np.searchsorted(v_side, target[sel]), 1, v_side.size - 1)
        g0, g1, v0, v1 = g_side[i - 1], g_side[i], v_side[i - 1], v_side[i]
        frac = np.clip((target[sel] - v0) / (v1 - v0), 0.0, 1.0)
        nu[sel] = g0 + frac * (g1 - g0)
        lo[sel] = np.minimum(g0, g1)
        hi[sel] = np.maximum(g0, g1)
    outside = (target < np.where(lower, v_left[0], v_right[0])) | ~np.isfinite(nu)

    def log_f(x, low, idx):
        # The table holds log α left of the split and log(1 − α) right of it.
        f = np.minimum(table.main(x), 0.0)
        other = table.left_of_split(x) != low
        if other.any():
            f[other] = _log1mexp(f[other])
        return f

    inside = ~outside
    if inside.any():
        nu[inside] = _newton_steps(
            nu[inside], lo[inside], hi[inside], target[inside], lower[inside], log_f,
            lambda x, idx: table.deriv(x), 40,
        )
    if outside.any():
        nu[outside] = _newton_inverse(log_a[outside], log_c[outside], k[outside])
    return nu


def _newton_inverse(log_a: np.ndarray, log_c: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Direct-path inverse: Newton in log α or log(1 − α) from ν = 0, bisection in [−90, 90]."""
    lower = log_a < -np.log(k)  # α < α_K(0) = 1/K
    target = np.where(lower, log_a, log_c)

    def log_f(x, low, idx):
        f = np.empty_like(x)
        f[low] = _log_values(x[low], k[idx][low], _ALPHA)
        f[~low] = _log_values(x[~low], k[idx][~low], _COMPLEMENT)
        return f

    start = np.zeros_like(log_a)
    lo = np.where(lower, -90.0, 0.0)
    hi = np.where(lower, 0.0, 90.0)
    return _newton_steps(start, lo, hi, target, lower, log_f, lambda x, idx: _log_values(x, k[idx], _DERIV), 200)


def _mpmath_reference(nu: float, vocab_size: int, kind: str = "alpha", dps: int = 30) -> Any:
    """α, 1 − α (kind="complement") or α' (kind="deriv") as an mpmath number, for tests and benchmarks.

    Independent of the code above: 30-digit integrands (1 − Φ^{K−1} as −expm1((K − 1)·log1p(−Φ(−z)))),
    ``mpmath.quad`` (tanh–sinh) split at the peak of the integrand and at ±2, 5, 12, 30 widths
    (mode and width found in double precision by scipy), integrand scaled to 1 at the peak because
    mpmath's error estimate is absolute.
    """
    import mpmath
    from scipy import optimize

    km1 = vocab_size - 1
    with mpmath.workdps(dps):
        nu_m = mpmath.mpf(nu)

        def integrand(z):
            gauss = mpmath.exp(-((z - nu_m) ** 2) / 2) / mpmath.sqrt(2 * mpmath.pi)
            if kind == "alpha":
                return gauss * mpmath.ncdf(z) ** km1
            if kind == "deriv":
                return km1 * gauss * mpmath.npdf(z) * mpmath.ncdf(z) ** (km1 - 1)
            return gauss * -mpmath.expm1(km1 * mpmath.log1p(-mpmath.ncdf(-z)))

        def neg_log(z: float) -> float:
            value = integrand(mpmath.mpf(z))
            return float(-mpmath.log(value)) if value > 0 else 1e300

        start = nu if kind != "deriv" else 0.5 * nu
        z_peak = optimize.minimize_scalar(neg_log, bracket=(start - 1.0, start + 1.0)).x
        h = 1e-3
        curvature = (neg_log(z_peak + h) - 2 * neg_log(z_peak) + neg_log(z_peak - h)) / h**2
        width = 1.0 / math.sqrt(max(curvature, 1.0))
        points = [-mpmath.inf]
        points += [mpmath.mpf(z_peak + m * width) for m in (-30, -12, -5, -2, 0, 2, 5, 12, 30)]
        points += [mpmath.inf]
        scale = integrand(mpmath.mpf(z_peak))
        return mpmath.quad(lambda z: integrand(z) / scale, points) * scale
