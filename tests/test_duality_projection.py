"""duality.project and duality.latent_sample: definition, ties, the calibrated survival rate, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from duality import latent_sample, project
from theory import LogLinearSchedule, calibrate


def project_reference(w: np.ndarray, x0: np.ndarray, mask_id: int) -> np.ndarray:
    """Plain reading of the definition: keep x0 iff its coordinate beats every other one strictly."""
    out = np.empty(x0.shape, dtype=np.int64)
    for index in np.ndindex(x0.shape):
        clean = int(x0[index])
        row = w[index]
        survives = all(row[clean] > row[j] for j in range(row.shape[0]) if j != clean)
        out[index] = clean if survives else mask_id
    return out


# Values from a small set make ties frequent; the float strategy covers the generic case.
tie_prone = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0])
generic = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60)
@given(
    data=st.data(),
    batch=st.tuples(st.integers(1, 3), st.integers(1, 5)),
    vocab_size=st.integers(2, 7),
    values=st.sampled_from([tie_prone, generic]),
)
def test_project_matches_loop_reference(data, batch, vocab_size, values):
    w = data.draw(arrays(np.float64, batch + (vocab_size,), elements=values))
    x0 = data.draw(arrays(np.int64, batch, elements=st.integers(0, vocab_size - 1)))
    mask_id = vocab_size
    got = project(torch.from_numpy(w), torch.from_numpy(x0), mask_id)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), project_reference(w, x0, mask_id))


def test_project_ties_go_to_the_mask():
    w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    x0 = torch.tensor([0, 2, 0])
    assert project(w, x0, 3).tolist() == [3, 3, 0]


def test_project_keeps_float32_and_int32():
    w = torch.randn(4, 6, 9, generator=torch.Generator().manual_seed(1))
    x0 = torch.randint(0, 9, (4, 6), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    z = project(w, x0, 9)
    assert z.dtype == torch.int32
    np.testing.assert_array_equal(z.numpy(), project_reference(w.double().numpy(), x0.numpy(), 9))


@pytest.mark.parametrize(
    ("w", "x0", "mask_id", "match"),
    [
        (torch.zeros(3, 4), torch.tensor([0, 1, 4]), 4, "x0"),  # token id out of range
        (torch.zeros(3, 4), torch.tensor([0, -1, 2]), 4, "x0"),
        (torch.zeros(3, 4), torch.tensor([0, 1, 2]), 2, "mask_id"),  # mask_id is a real token
        (torch.zeros(3, 4), torch.tensor([0, 1, 2]), -1, "mask_id"),  # no token id is negative
        (torch.zeros(3, 4), torch.tensor([0, 1]), 4, "shape"),  # mismatched shapes
        (torch.zeros(3, 1), torch.tensor([0, 0, 0]), 4, "K >= 2"),
        (torch.full((2, 3), float("nan")), torch.tensor([0, 1]), 3, "NaN"),
    ],
)
def test_project_bad_input(w, x0, mask_id, match):
    with pytest.raises(ValueError, match=match):
        project(w, x0, mask_id)


@pytest.fixture(scope="module")
def calibrated_small():
    return calibrate(LogLinearSchedule(), 6)


def test_latent_sample_is_the_formula(calibrated_small):
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 6, (3, 5), generator=generator)
    eps = torch.randn(3, 5, 6, dtype=torch.float64, generator=generator)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    w = latent_sample(x0, calibrated_small, t, eps)
    alpha_tilde = calibrated_small.alpha_tilde(t)
    sigma_tilde = calibrated_small.sigma_tilde(t)
    for row in range(3):
        a, s = float(alpha_tilde[row]), float(sigma_tilde[row])
        expected = a * torch.nn.functional.one_hot(x0[row], 6).double() + s * eps[row]
        torch.testing.assert_close(w[row], expected, rtol=1e-9, atol=1e-12)
    scalar = latent_sample(x0, calibrated_small, 0.5, eps)
    a, s = calibrated_small.alpha_tilde(0.5), calibrated_small.sigma_tilde(0.5)
    torch.testing.assert_close(scalar, a * torch.nn.functional.one_hot(x0, 6).double() + s * eps, rtol=1e-12, atol=1e-12)


def test_latent_sample_ends_are_clean_and_masked():
    calibrated = calibrate(LogLinearSchedule(eps=0.0), 5)
    x0 = torch.tensor([0, 3, 4])
    eps = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert project(latent_sample(x0, calibrated, 0.0, eps), x0, 5).tolist() == [0, 3, 4]
    assert project(latent_sample(x0, calibrated, 1.0, eps), x0, 5).tolist() == [5, 5, 5]


@pytest.mark.parametrize("t", [0.1, 0.5, 0.95])
def test_projected_latent_survives_with_probability_alpha(calibrated_small, t):
    """P(project(w_t) = x0) = α(t).  Exact two-sided binomial test at level 1e-6 (false-fail rate ≤ 1e-6
    per case), n = 20 000 tokens."""
    n = 20_000
    generator = torch.Generator().manual_seed(int(1000 * t))
    x0 = torch.randint(0, 6, (n,), generator=generator)
    eps = torch.randn(n, 6, dtype=torch.float64, generator=generator)
    kept = int((project(latent_sample(x0, calibrated_small, t, eps), x0, 6) == x0).sum())
    alpha = calibrated_small.alpha(t)
    assert stats.binomtest(kept, n, alpha).pvalue > 1e-6, (kept / n, alpha)


def test_latent_sample_bad_input(calibrated_small):
    x0 = torch.tensor([0, 1])
    eps = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="t"):
        latent_sample(x0, calibrated_small, 1.5, eps)
    with pytest.raises(ValueError, match="t"):
        latent_sample(x0, calibrated_small, math.nan, eps)
    with pytest.raises(ValueError, match="vocab_size"):
        latent_sample(x0, calibrated_small, 0.5, torch.zeros(2, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        latent_sample(x0, calibrated_small, 0.5, torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="x0"):
        latent_sample(torch.tensor([0, 6]), calibrated_small, 0.5, eps)
    with pytest.raises(ValueError, match="t"):
        latent_sample(x0, calibrated_small, torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64), eps)
