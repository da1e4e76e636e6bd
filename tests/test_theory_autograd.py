"""The operator is differentiable in torch: a tensor that requires grad gets a graph whose backward
is the operator's own derivative dα/dν (theory/operator.py).

gradcheck compares that backward with central finite differences of the forward values in float64,
so it is independent of the derivative code; the planted-bug tests show it fails when the backward
is wrong (the complement's sign, the log's 1/α, the inverse's reciprocal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from theory import log_masked_alpha, masked_alpha, masked_alpha_deriv, nu_from_masked_alpha, uniform_alpha
from theory import operator as op

# ν per K: both tails and the middle of the transition (its median moves right as K grows).
NUS = {
    2: [-9.0, -2.5, 0.0, 0.7, 3.0, 9.0],
    10: [-7.0, -1.5, 0.4, 1.9, 4.5, 8.5],
    50258: [-4.0, 0.0, 2.5, 4.1, 6.0, 10.0],
}


@pytest.fixture(autouse=True, scope="module")
def per_k_tables():
    """Build the per-K tables first: a K's table is built once 256 of its points have been asked for,
    so without this the repeated calls of gradcheck would switch from quadrature to table half-way
    (the two agree to ~1e-11, but gradcheck's reentrancy check demands identical backwards)."""
    for k in (*NUS, 3, 1000):
        masked_alpha(np.linspace(-5.0, 10.0, 512), k)


def nus(k: int) -> torch.Tensor:
    return torch.tensor(NUS[k], dtype=torch.float64, requires_grad=True)


# Smooth maps of ν whose finite differences are well conditioned at the NUS points.
FORWARD = {
    "alpha": lambda nu, k: masked_alpha(nu, k),
    "complement": lambda nu, k: masked_alpha(nu, k, complement=True),
    "log": lambda nu, k: log_masked_alpha(nu, k),
    "log_complement": lambda nu, k: log_masked_alpha(nu, k, complement=True),
    "uniform": lambda nu, k: uniform_alpha(nu, k),
}


@pytest.mark.parametrize("k", sorted(NUS))
@pytest.mark.parametrize("kind", sorted(FORWARD))
def test_gradcheck_forward_functions(kind, k):
    func = FORWARD[kind]
    assert torch.autograd.gradcheck(lambda nu: func(nu, k), (nus(k),), eps=1e-6, atol=1e-9, rtol=1e-5)


@pytest.mark.parametrize("k", sorted(NUS))
@pytest.mark.parametrize("complement", [False, True])
def test_gradcheck_inverse(k, complement):
    """dν/da = 1/α'(ν) (and −1/α'(ν) for the complement argument), at a from 1e-3 to 1 − 1e-3."""
    a = torch.tensor([1e-3, 0.05, 1.0 / k, 0.3, 0.8, 0.999], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: nu_from_masked_alpha(x, k, complement=complement), (a,), eps=1e-8, atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("k", sorted(NUS))
def test_gradcheck_inverse_in_the_tails_through_the_complement(k):
    """Far tails of the inverse: a = 1e-12 and 1 − a = 1e-12 (step 1e-18 keeps the finite difference inside)."""
    tiny = torch.tensor([1e-12, 3e-12], dtype=torch.float64, requires_grad=True)
    for complement in (False, True):
        assert torch.autograd.gradcheck(
            lambda x: nu_from_masked_alpha(x, k, complement=complement), (tiny,), eps=1e-18, atol=0.0, rtol=1e-5
        )


def test_binary_vocabulary_gradient_is_the_closed_form():
    """K = 2: α = Φ(ν/√2), dα/dν = φ(ν/√2)/√2, d log α/dν = φ/(√2 Φ): an independent reference."""
    nu = nus(2)
    (grad,) = torch.autograd.grad(masked_alpha(nu, 2).sum(), nu)
    x = nu.detach().numpy() / math.sqrt(2.0)
    np.testing.assert_allclose(grad.numpy(), norm.pdf(x) / math.sqrt(2.0), rtol=1e-12)
    (grad_log,) = torch.autograd.grad(log_masked_alpha(nu, 2).sum(), nu)
    np.testing.assert_allclose(grad_log.numpy(), np.exp(norm.logpdf(x) - norm.logcdf(x)) / math.sqrt(2.0), rtol=1e-11)
    (grad_c,) = torch.autograd.grad(masked_alpha(nu, 2, complement=True).sum(), nu)
    np.testing.assert_allclose(grad_c.numpy(), -norm.pdf(x) / math.sqrt(2.0), rtol=1e-12)


def test_gradient_through_a_schedule_round_trip():
    """ν(a) then α(ν) is the identity, so d α(ν(a))/da = 1 (chain rule across two of our backwards)."""
    a = torch.tensor([0.01, 0.2, 0.6, 0.95], dtype=torch.float64, requires_grad=True)
    for k in (3, 1000):
        (grad,) = torch.autograd.grad(masked_alpha(nu_from_masked_alpha(a, k), k).sum(), a)
        np.testing.assert_allclose(grad.numpy(), np.ones(4), rtol=1e-9)


def test_broadcasting_float32_and_devices_of_the_gradient():
    """ν of shape (3, 1) against K of shape (4,): the gradient sums over K and has ν's shape and dtype."""
    nu = torch.tensor([[-1.0], [0.5], [3.0]], dtype=torch.float32, requires_grad=True)
    ks = torch.tensor([2, 10, 50258, 10**7])
    out = masked_alpha(nu, ks)
    assert out.shape == (3, 4) and out.dtype == torch.float64 and out.requires_grad
    out.sum().backward()
    assert nu.grad.shape == (3, 1) and nu.grad.dtype == torch.float32
    expected = masked_alpha_deriv(nu.detach().double().numpy(), ks.numpy()).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(nu.grad.numpy(), expected, rtol=1e-6)


def test_no_grad_path_is_unchanged():
    """Without grad tracking the result is a plain tensor (no graph), bit-identical to the graph's values."""
    nu = nus(10)
    tracked = masked_alpha(nu, 10)
    plain = masked_alpha(nu.detach(), 10)
    assert tracked.grad_fn is not None and plain.grad_fn is None and not plain.requires_grad
    with torch.no_grad():
        under_no_grad = masked_alpha(nu, 10)
    assert under_no_grad.grad_fn is None
    assert torch.equal(tracked.detach(), plain) and torch.equal(under_no_grad, plain)


def test_what_cannot_be_differentiated_is_refused_by_name():
    """α' has no implemented derivative, K is an integer: refuse instead of returning a detached tensor."""
    with pytest.raises(ValueError, match="^nu .*requires grad"):
        masked_alpha_deriv(nus(10), 10)
    k = torch.tensor(10.0, requires_grad=True)
    with pytest.raises(ValueError, match="^vocab_size .*requires grad"):
        masked_alpha(0.5, k)


# --- planted bugs: gradcheck must fail on a wrong backward -----------------------------------


def _fails_gradcheck(func, x) -> bool:
    return not torch.autograd.gradcheck(func, (x,), eps=1e-6, atol=1e-9, rtol=1e-5, raise_exception=False)


def test_gradcheck_catches_complement_derivative_with_the_wrong_sign(monkeypatch):
    monkeypatch.setitem(op._SLOPES, "complement", op._SLOPES["alpha"])
    assert _fails_gradcheck(lambda nu: masked_alpha(nu, 10, complement=True), nus(10))


def test_gradcheck_catches_log_derivative_without_the_division_by_alpha(monkeypatch):
    monkeypatch.setitem(op._SLOPES, "log", op._SLOPES["alpha"])
    assert _fails_gradcheck(lambda nu: log_masked_alpha(nu, 50258), nus(50258))


def test_gradcheck_catches_inverse_derivative_not_inverted(monkeypatch):
    """The inverse's slope must be 1/α'(ν), not α'(ν) evaluated at ν = α⁻¹(a)."""
    monkeypatch.setitem(op._SLOPES, "inverse", lambda a, k, nu: np.exp(op._log_values(nu, k, op._DERIV)))
    a = torch.tensor([0.05, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    assert _fails_gradcheck(lambda x: nu_from_masked_alpha(x, 10), a)

