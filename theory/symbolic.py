"""Machine-checked statements about the masked duality, proved with sympy.

Each proof function returns a dict of named sympy results; a statement holds when every
entry is either the expression 0 (a residual that sympy simplified to exactly zero) or
sympy's `true` (a relation sympy decided from the assumptions on the symbols).
`holds(result)` applies that rule, and `run_all()` records every statement with the
verdict and the residuals as text.

Every proof takes the claimed formula as an argument (the correct one by default), so the
same machinery can be pointed at a wrong statement (an exponent K instead of K − 1, …) and
must then return a nonzero residual or an undecided relation: the tests do that for each.

Notation: φ, Φ standard normal density and CDF (Φ(x) = erfc(−x/√2)/2), K real tokens,
α_K(ν) = ∫ φ(z − ν) Φ(z)^{K−1} dz, masked schedule α_t (probability a token is visible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import sympy as sp

z, nu, u, y, c, e1, e2 = sp.symbols("z nu u y c e1 e2", real=True)
t = sp.Symbol("t", real=True)
h = sp.Symbol("h", positive=True)
K = sp.Symbol("K", integer=True, positive=True)
# α_r ≥ α_s ≥ α_t are probabilities; positive symbols are enough for the algebra.
alpha_r, alpha_s, alpha_t = sp.symbols("alpha_r alpha_s alpha_t", positive=True)

Result = dict[str, sp.Basic]


def phi(x: sp.Expr) -> sp.Expr:
    """Standard normal density φ(x)."""
    return sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)


def Phi(x: sp.Expr) -> sp.Expr:
    """Standard normal CDF Φ(x) = erfc(−x/√2)/2."""
    return sp.erfc(-x / sp.sqrt(2)) / 2


def residual(expr: sp.Expr) -> sp.Expr:
    """`expr` simplified (erfc rewritten as erf first, so that Φ-identities cancel)."""
    return sp.simplify(sp.expand(sp.sympify(expr).rewrite(sp.erf)))


def holds(result: Result) -> bool:
    """True iff every entry of a proof's result is exactly 0 or sympy's `true`."""
    return all(value == sp.S.Zero or value is sp.true for value in result.values())


def _alpha_integrand(k: sp.Expr, exponent_offset: int = 1) -> sp.Expr:
    return phi(z - nu) * Phi(z) ** (k - exponent_offset)


# ----------------------------------------------------------------------------------
# the operator
# ----------------------------------------------------------------------------------


def alpha_two_closed_form(claim: Callable[[sp.Expr], sp.Expr] | None = None) -> Result:
    """α_2(ν) = ∫ φ(z − ν) Φ(z) dz = Φ(ν/√2).

    Both sides have the same derivative and agree at ν = 0, so they are equal:
    d/dν α_2 = ∫ φ(z − ν) φ(z) dz (derivative formula with K = 2) is a Gaussian integral
    sympy evaluates; α_2(0) = [Φ(z)²/2] from −∞ to ∞ = 1/2.
    """
    claim_expr = (claim or (lambda v: Phi(v / sp.sqrt(2))))(nu)
    derivative_lhs = sp.integrate(phi(z - nu) * phi(z), (z, -sp.oo, sp.oo))
    antiderivative = Phi(z) ** 2 / 2
    value_at_zero = sp.limit(antiderivative, z, sp.oo) - sp.limit(antiderivative, z, -sp.oo)
    return {
        "derivative": residual(derivative_lhs - sp.diff(claim_expr, nu)),
        "antiderivative": residual(sp.diff(antiderivative, z) - phi(z) * Phi(z)),
        "value at 0": residual(value_at_zero - claim_expr.subs(nu, 0)),
    }


def alpha_at_zero(ks: tuple[int, ...] = (2, 3, 4, 5), claim: Callable[[int], sp.Expr] | None = None) -> Result:
    """α_K(0) = ∫ φ(z) Φ(z)^{K−1} dz = 1/K, by the antiderivative Φ(z)^K/K (checked by differentiation)."""
    claim = claim or (lambda k: sp.Rational(1, k))
    result: Result = {}
    for k in ks:
        antiderivative = Phi(z) ** k / k
        result[f"K={k} antiderivative"] = residual(sp.diff(antiderivative, z) - phi(z) * Phi(z) ** (k - 1))
        integral = sp.limit(antiderivative, z, sp.oo) - sp.limit(antiderivative, z, -sp.oo)
        result[f"K={k} value"] = residual(integral - claim(k))
    return result


def alpha_limits(ks: tuple[int, ...] = (2, 3, 4, 5), claim: tuple[Any, Any] = (1, 0)) -> Result:
    """α_K(+∞) = 1 and α_K(−∞) = 0.

    In α_K(ν) = ∫ φ(u) Φ(u + ν)^{K−1} du the factor Φ(u + ν)^{K−1} lies in [0, 1] and tends
    pointwise to 1 (ν → +∞) and 0 (ν → −∞); dominated convergence and ∫ φ = 1 give the
    limits.  For K = 2 also through the closed form Φ(ν/√2).
    """
    upper, lower = claim
    mass = sp.integrate(phi(u), (u, -sp.oo, sp.oo))
    result: Result = {"normal density integrates to 1": residual(mass - 1)}
    for k in ks:
        factor = Phi(u + nu) ** (k - 1)
        result[f"K={k} nu->+oo"] = residual(mass * sp.limit(factor, nu, sp.oo) - upper)
        result[f"K={k} nu->-oo"] = residual(mass * sp.limit(factor, nu, -sp.oo) - lower)
    closed = Phi(nu / sp.sqrt(2))
    result["K=2 closed form nu->+oo"] = residual(sp.limit(closed, nu, sp.oo) - upper)
    result["K=2 closed form nu->-oo"] = residual(sp.limit(closed, nu, -sp.oo) - lower)
    return result


def derivative_formula(coefficient: sp.Expr | None = None, exponent_offset: int = 2) -> Result:
    """dα_K/dν = (K − 1) ∫ φ(z − ν) φ(z) Φ(z)^{K−2} dz, and it is positive.

    Differentiating under the integral: ∂_ν φ(z − ν) = −∂_z φ(z − ν), so
    ∂_ν[φ(z − ν)Φ^{K−1}] = (K − 1) φ(z − ν) φ(z) Φ^{K−2} − ∂_z[φ(z − ν)Φ^{K−1}]
    (checked for symbolic K), and the boundary term φ(z − ν)Φ(z)^{K−1} vanishes at z = ±∞.
    Positivity: with Φ(z) = q > 0 and K = j + 2 (j ≥ 0) the integrand is a product of
    positive factors, which sympy decides from the assumptions.
    For K = 2 the integral is φ(ν/√2)/√2.
    """
    coefficient = K - 1 if coefficient is None else coefficient
    integrand = _alpha_integrand(K)

    def claimed_with(cdf_value: sp.Expr) -> sp.Expr:
        return coefficient * phi(z - nu) * phi(z) * cdf_value ** (K - exponent_offset)

    claimed = claimed_with(Phi(z))
    boundary = phi(z - nu) * Phi(z) ** (K - 1)
    result: Result = {
        "shift identity": residual(sp.diff(phi(z - nu), nu) + sp.diff(phi(z - nu), z)),
        "integration by parts": residual(sp.diff(integrand, nu) - (claimed - sp.diff(boundary, z))),
        "boundary z->+oo": sp.limit(boundary, z, sp.oo),
        "boundary z->-oo": sp.limit(boundary, z, -sp.oo),
    }
    j = sp.Symbol("j", integer=True, nonnegative=True)
    q = sp.Symbol("q", positive=True)
    positive_form = claimed_with(q).subs(K, j + 2)
    result["positive integrand"] = sp.StrictGreaterThan(positive_form, 0)
    gaussian = sp.integrate(phi(z - nu) * phi(z), (z, -sp.oo, sp.oo))
    result["K=2 integrand is phi(z - nu) phi(z)"] = residual(claimed.subs(K, 2) - phi(z - nu) * phi(z))
    result["K=2 value phi(nu/sqrt 2)/sqrt 2"] = residual(gaussian - phi(nu / sp.sqrt(2)) / sp.sqrt(2))
    return result


def uniform_affine_map(claim: Callable[[sp.Expr, sp.Expr], sp.Expr] | None = None) -> Result:
    """u(α) = (K·α − 1)/(K − 1): u(1/K) = 0, u(1) = 1, and it solves u + (1 − u)/K = α.

    A uniform-state marginal keeps the clean token with weight u and otherwise draws a
    uniform token, so P(token = clean) = u + (1 − u)/K; matching it to the masked survival
    probability α = P(argmax = clean) gives the affine map of the Diffusion Duality work.
    """
    a = sp.Symbol("a", positive=True)
    u_of = claim or (lambda alpha, k: (k * alpha - 1) / (k - 1))
    kk = sp.Symbol("K", integer=True, positive=True)
    mapped = u_of(a, kk)
    weight = sp.Symbol("w")
    solved = sp.solve(sp.Eq(weight + (1 - weight) / kk, a), weight)
    return {
        "u(1/K) = 0": residual(mapped.subs(a, 1 / kk)),
        "u(1) = 1": residual(mapped.subs(a, 1) - 1),
        "unique solution": residual(sp.Integer(len(solved)) - 1),
        "solves u + (1 - u)/K = alpha": residual(solved[0] - mapped),
    }


# ----------------------------------------------------------------------------------
# the masked process
# ----------------------------------------------------------------------------------


def _masked_kernel(keep: sp.Expr, vocab_size: int) -> sp.Matrix:
    """Row-stochastic transition on K real tokens + mask (last index): real tokens stay with prob `keep`."""
    n = vocab_size + 1
    m = sp.zeros(n, n)
    for i in range(vocab_size):
        m[i, i] = keep
        m[i, vocab_size] = 1 - keep
    m[vocab_size, vocab_size] = 1
    return m


def kernel_composition(
    conditional: Callable[[sp.Expr, sp.Expr], sp.Expr] | None = None, vocab_size: int = 3
) -> Result:
    """The masked kernels compose: Q_{r→s}·Q_{s→t} = Q_{r→t} with α_{t|s} = α_t/α_s.

    Checked on the full (K + 1)-state transition matrices (K = 3) for symbolic α_r, α_s, α_t,
    together with the scalar identity α_{t|s}·α_{s|r} = α_{t|r}.
    """
    cond = conditional or (lambda later, earlier: later / earlier)
    q_rs = _masked_kernel(cond(alpha_s, alpha_r), vocab_size)
    q_st = _masked_kernel(cond(alpha_t, alpha_s), vocab_size)
    q_rt = _masked_kernel(cond(alpha_t, alpha_r), vocab_size)
    difference = (q_rs * q_st - q_rt).applyfunc(residual)
    return {
        "scalar": residual(cond(alpha_t, alpha_s) * cond(alpha_s, alpha_r) - cond(alpha_t, alpha_r)),
        "matrix max abs entry": sp.Max(*[sp.Abs(x) for x in difference]),
    }


def reverse_posterior(
    unmask_probability: Callable[[sp.Expr, sp.Expr], sp.Expr] | None = None, vocab_size: int = 3
) -> Result:
    """q(z_s | z_t = mask, x0) for s < t: by Bayes, q(z_s | x0)·q(z_t = mask | z_s)/q(z_t = mask | x0).

    It sums to one, puts (α_s − α_t)/(1 − α_t) on x0 (unmask), (1 − α_s)/(1 − α_t) on the mask,
    and nothing on other real tokens.
    """
    claim = unmask_probability or (lambda a_s, a_t: (a_s - a_t) / (1 - a_t))
    mask = vocab_size
    x0 = 0
    q_0s = _masked_kernel(alpha_s, vocab_size)
    q_st = _masked_kernel(alpha_t / alpha_s, vocab_size)
    q_0t = _masked_kernel(alpha_t, vocab_size)
    posterior = [q_0s[x0, j] * q_st[j, mask] / q_0t[x0, mask] for j in range(vocab_size + 1)]
    result: Result = {
        "sums to one": residual(sp.Add(*posterior) - 1),
        "unmask probability": residual(posterior[x0] - claim(alpha_s, alpha_t)),
        "stays masked": residual(posterior[mask] - (1 - alpha_s) / (1 - alpha_t)),
    }
    result["other tokens"] = sp.Add(*[sp.Abs(posterior[j]) for j in range(1, vocab_size)])
    return result


def elbo_weight_limit(weight: Callable[[sp.Expr, sp.Expr], sp.Expr] | None = None) -> Result:
    """The discrete-time ELBO term tends to the continuous-time weight −α′(t)/(1 − α(t)).

    One ancestral step from t to s = t − h unmasks a masked token with probability
    (α_{t−h} − α_t)/(1 − α_t); the sum over T = 1/h steps is a Riemann sum of that divided
    by h, whose limit h → 0 is the weight.  Shown for a generic α (first-order Taylor
    expansion, then the limit) and, by sympy's limit, for the log-linear, cosine and
    polynomial schedules.
    """
    claim = weight or (lambda a, da: -da / (1 - a))
    generic = sp.Function("alpha")
    step = (sp.series(generic(t - h), h, 0, 2).removeO().doit() - generic(t)) / (h * (1 - generic(t)))
    result: Result = {
        "generic alpha": residual(sp.limit(step, h, 0) - claim(generic(t), sp.diff(generic(t), t)))
    }
    eps, power = sp.symbols("epsilon p", positive=True)
    tt = sp.Symbol("t", positive=True)
    schedules = {
        "log-linear": 1 - (1 - eps) * tt,
        "cosine": eps + (1 - eps) * sp.cos(sp.pi * tt / 2),
        "polynomial p=3": 1 - (1 - eps) * tt**3,
    }
    for label, a in schedules.items():
        discrete = (a.subs(tt, tt - h) - a) / (h * (1 - a))
        result[label] = residual(sp.limit(discrete, h, 0) - claim(a, sp.diff(a, tt)))
    return result


# ----------------------------------------------------------------------------------
# the threshold coupling
# ----------------------------------------------------------------------------------


def threshold_cdf(ks: tuple[int, ...] = (2, 3), exponent_offset: int = 1) -> Result:
    """Y = max_{j≠k} ε_j − ε_k has CDF P(Y ≤ y) = ∫ φ(u) Φ(u + y)^{K−1} du = α_K(y).

    Conditioning on ε_k = u, the K − 1 other coordinates are independent, so
    P(max ≤ u + y) is the (K − 1)-fold integral of Π φ(e_j) over (−∞, u + y]^{K−1}, which
    sympy evaluates for K = 2, 3 to Φ(u + y)^{K−1}.  The substitution z = u + y turns the
    result into the operator's integrand φ(z − y) Φ(z)^{K−1}.
    """
    others = [e1, e2]
    result: Result = {}
    for k in ks:
        if k - 1 > len(others):
            raise ValueError(f"ks entries must be 2 or 3, got {k!r}")
        density = sp.Mul(*[phi(e) for e in others[: k - 1]])
        bounds = [(e, -sp.oo, c) for e in others[: k - 1]]
        inner = sp.integrate(density, *bounds).subs(c, u + y)
        claimed = phi(u) * Phi(u + y) ** (k - exponent_offset)
        result[f"K={k} conditional CDF"] = residual(phi(u) * inner - claimed)
        substituted = claimed.subs(u, z - y)  # dz = du
        result[f"K={k} operator form"] = residual(substituted - phi(z - y) * Phi(z) ** (k - 1))
    return result


def probability_integral_transform(transform: Callable[[sp.Expr], sp.Expr] | None = None) -> Result:
    """If Y has continuous increasing CDF F then F(Y) is uniform: P(F(Y) ≤ p) = F(F⁻¹(p)) = p.

    So u = α_K(Y) is U(0, 1) and "visible iff Y < ν(t)" equals "visible iff u < α(t)": one
    uniform per token.  Checked with F = α_2 = Φ(y/√2) (sympy solves F(y) = p for y) and
    with a logistic CDF.  `transform` replaces F in the event {G(Y) ≤ p} (default G = F).
    """
    p = sp.Symbol("p", positive=True)
    cdfs = {
        "alpha_2": Phi(y / sp.sqrt(2)),
        "logistic": 1 / (1 + sp.exp(-y)),
    }
    result: Result = {}
    for label, cdf in cdfs.items():
        g = (transform or (lambda f: f))(cdf)
        solutions = sp.solve(sp.Eq(g, p), y)
        result[f"{label} one preimage"] = residual(sp.Integer(len(solutions)) - 1)
        # P(G(Y) ≤ p) = P(Y ≤ G⁻¹(p)) = F(G⁻¹(p)) for increasing G.
        result[f"{label} P(G(Y) <= p) - p"] = residual(cdf.subs(y, solutions[0]) - p)
    return result


# ----------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolicResult:
    name: str
    statement: str
    passed: bool
    detail: str


PROOFS: dict[str, tuple[str, Callable[[], Result]]] = {
    "alpha_two_closed_form": ("alpha_2(nu) = Phi(nu/sqrt(2))", alpha_two_closed_form),
    "alpha_at_zero": ("alpha_K(0) = 1/K for K = 2..5", alpha_at_zero),
    "alpha_limits": ("alpha_K(+oo) = 1, alpha_K(-oo) = 0 (K = 2..5)", alpha_limits),
    "derivative_formula": (
        "d alpha_K/d nu = (K-1) * int phi(z-nu) phi(z) Phi(z)^(K-2) dz > 0",
        derivative_formula,
    ),
    "uniform_affine_map": ("(K alpha - 1)/(K - 1) maps 1/K -> 0, 1 -> 1 and solves u + (1-u)/K = alpha", uniform_affine_map),
    "kernel_composition": ("masked kernels compose: alpha_{t|s} alpha_{s|r} = alpha_{t|r}, alpha_{t|s} = alpha_t/alpha_s", kernel_composition),
    "reverse_posterior": (
        "q(z_s | z_t = mask, x0) sums to 1 with P(unmask) = (alpha_s - alpha_t)/(1 - alpha_t)",
        reverse_posterior,
    ),
    "elbo_weight_limit": ("discrete ELBO term / step -> -alpha'(t)/(1 - alpha(t))", elbo_weight_limit),
    "threshold_cdf": ("P(max_{j!=k} eps_j - eps_k <= y) = int phi(u) Phi(u+y)^(K-1) du (K = 2, 3)", threshold_cdf),
    "probability_integral_transform": ("F(Y) ~ U(0,1) for a continuous increasing CDF F of Y", probability_integral_transform),
}


def _format(result: Result) -> str:
    return "; ".join(f"{key}: {value}" for key, value in result.items())


def run_all() -> list[SymbolicResult]:
    """Run every proof; `passed` is `holds` of the sympy result, `detail` the residuals as text."""
    results = []
    for name, (statement, proof) in PROOFS.items():
        result = proof()
        results.append(SymbolicResult(name=name, statement=statement, passed=holds(result), detail=_format(result)))
    return results
