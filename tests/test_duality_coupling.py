"""duality.MaskedCoupling: nested masks, mask rates, determinism, equality in law of the three methods,
the O(1) max-of-normals draw, bad input.

Monte Carlo tests are seeded; each states its false-fail rate (probability that a correct
implementation fails for a fresh seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from duality import (
    METHODS,
    MaskedCoupling,
    max_of_standard_normals,
    sample_threshold,
    threshold_statistic,
)
from theory import CosineSchedule, LogLinearSchedule, calibrate, masked_alpha

K_SMALL = 6

_COUPLINGS: dict[tuple[str, str], MaskedCoupling] = {}


def coupling_for(method: str, schedule_name: str = "loglinear") -> MaskedCoupling:
    """Couplings are shared across tests so their ν(t) caches are reused."""
    key = (method, schedule_name)
    if key not in _COUPLINGS:
        schedule = LogLinearSchedule() if schedule_name == "loglinear" else CosineSchedule()
        _COUPLINGS[key] = MaskedCoupling(schedule, K_SMALL, K_SMALL, method=method)
    return _COUPLINGS[key]


def tokens(shape: tuple[int, ...], seed: int, vocab_size: int = K_SMALL) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- max of normals


@pytest.mark.parametrize("count", [1, 5, 1000, 10**7])
def test_max_of_normals_has_the_exact_cdf(count):
    """One-sample KS of M against P(M <= m) = Φ(m)^count, n = 20 000; reject at p < 1e-6 (false-fail ≤ 1e-6)."""
    v = torch.rand(20_000, dtype=torch.float64, generator=torch.Generator().manual_seed(count % 997))
    m = max_of_standard_normals(v.clamp(min=1e-300), count)
    assert torch.isfinite(m).all()
    cdf = lambda x: np.exp(count * stats.norm.logcdf(x))  # noqa: E731
    assert stats.kstest(m.numpy(), cdf).pvalue > 1e-6


def test_max_of_normals_is_monotone_and_finite_in_the_tails():
    v = torch.tensor([1e-300, 1e-12, 0.5, 1 - 1e-12, 1.0], dtype=torch.float64)
    for count in (2, 50_258, 10**7, 10**9):
        m = max_of_standard_normals(v, count)
        assert bool(torch.isfinite(m[:-1]).all())
        assert bool((m[1:] >= m[:-1]).all())
        # P(M <= m) evaluated back from the draw reproduces v (inverse CDF), in log space.
        log_cdf = count * stats.norm.logcdf(m[1:-1].numpy())
        np.testing.assert_allclose(log_cdf, np.log(v[1:-1].numpy()), rtol=1e-6, atol=1e-15)


def test_threshold_draw_matches_the_gaussian_statistic():
    """Y from the O(1) draw vs Y = max_{j≠k} ε_j − ε_k from materialised noise (K = 6): two-sample KS,
    n = 20 000 each, reject at p < 1e-6 (false-fail ≤ 1e-6)."""
    n = 20_000
    generator = torch.Generator().manual_seed(11)
    y_fast = sample_threshold((n,), K_SMALL, generator=generator)
    x0 = tokens((n,), 12)
    y_slow = threshold_statistic(torch.randn(n, K_SMALL, dtype=torch.float64, generator=generator), x0)
    assert stats.ks_2samp(y_fast.numpy(), y_slow.numpy()).pvalue > 1e-6


def test_threshold_cdf_is_masked_alpha():
    """α_K is the CDF of Y: u = α_K(Y) is U(0, 1).  One-sample KS, n = 20 000, at K = 6 and K = 50 258;
    reject at p < 1e-6 each (false-fail ≤ 2e-6)."""
    for vocab_size in (K_SMALL, 50_258):
        y = sample_threshold((20_000,), vocab_size, generator=torch.Generator().manual_seed(vocab_size))
        u = np.asarray(masked_alpha(y.numpy(), vocab_size))
        assert stats.kstest(u, "uniform").pvalue > 1e-6


# --------------------------------------------------------------------------- nesting


times = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=25)
@given(method=st.sampled_from(METHODS), seed=st.integers(0, 2**31 - 1), s=times, t=times)
def test_masks_are_nested(method, seed, s, t):
    """Same noise: for s <= t every token visible at t is visible at s (a certainty, no tolerance)."""
    s, t = min(s, t), max(s, t)
    coupling = coupling_for(method)
    x0 = tokens((3, 40), seed)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(seed))
    z_s, z_t = coupling.pair(x0, noise, s, t)
    visible_s, visible_t = z_s != K_SMALL, z_t != K_SMALL
    assert not bool((visible_t & ~visible_s).any())
    assert bool((z_s[visible_s] == x0[visible_s]).all()) and bool((z_t[visible_t] == x0[visible_t]).all())


@settings(max_examples=10)
@given(method=st.sampled_from(METHODS), seed=st.integers(0, 2**31 - 1))
def test_masks_nested_across_a_time_grid(method, seed):
    coupling = coupling_for(method)
    x0 = tokens((2, 50), seed)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(seed))
    grid = [0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0]
    visible = torch.stack([coupling.visible(noise, t, x0=x0) for t in grid])
    # visible count never increases along the grid and each later set is a subset
    assert not bool((visible[1:] & ~visible[:-1]).any())


@pytest.mark.parametrize("method", METHODS)
def test_visible_agrees_with_unmask_time(method):
    """visible at t iff t < τ, except within rounding of the schedule inversion at t ≈ τ."""
    coupling = coupling_for(method)
    x0 = tokens((4, 250), 5)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(5))
    tau = coupling.unmask_time(noise, x0=x0)
    assert tau.dtype == torch.float64 and tau.shape == x0.shape
    assert bool(((tau >= 0) & ((tau <= 1) | torch.isinf(tau))).all())
    for t in (0.0, 0.1, 0.4, 0.77, 1.0):
        visible = coupling.visible(noise, t, x0=x0)
        clear = (tau - t).abs() > 1e-9
        assert bool((visible[clear] == (t < tau[clear])).all())


def test_gaussian_method_is_the_projection_of_the_latent():
    """The gaussian coupling is literally project(latent_sample(x0, calibrated, t, ε)), and reading the same ε
    through Y = threshold_statistic(ε, x0) gives the same visibility (Y < ν(t)) away from the boundary."""
    from duality import latent_sample, project

    coupling = coupling_for("gaussian")
    x0 = tokens((3, 200), 31)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(31))
    y = threshold_statistic(noise, x0)
    t = torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64)
    z = coupling.mask(x0, noise, t)
    assert torch.equal(z, project(latent_sample(x0, coupling.calibrated, t, noise), x0, K_SMALL))
    nu = coupling.calibrated.nu(t).unsqueeze(-1)
    clear = (y - nu).abs() > 1e-9
    assert torch.equal((z != K_SMALL)[clear], (y < nu)[clear])


# --------------------------------------------------------------------------- rates


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("schedule_name", ["loglinear", "cosine"])
def test_mask_rate_matches_alpha(method, schedule_name):
    """P(visible at t) = α(t) per token.  Exact two-sided binomial test per time at level 1e-7
    (5 times: false-fail ≤ 5e-7 per case), n = 6 000 tokens (gaussian) or 20 000."""
    coupling = coupling_for(method, schedule_name)
    n = 6_000 if method == "gaussian" else 20_000
    x0 = tokens((n,), 21)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(22))
    for t in (0.05, 0.3, 0.5, 0.8, 0.99):
        z = coupling.mask(x0, noise, t)
        kept = int((z == x0).sum())
        assert int((z == K_SMALL).sum()) == n - kept
        alpha = float(coupling.schedule.alpha(t))
        assert stats.binomtest(kept, n, alpha).pvalue > 1e-7, (method, t, kept / n, alpha)


@pytest.mark.parametrize("method", METHODS)
def test_per_sequence_time_equals_rowwise_scalar_time(method):
    coupling = coupling_for(method)
    x0 = tokens((4, 7, 3), 8)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(8))
    t = torch.tensor([0.1, 0.45, 0.7, 1.0], dtype=torch.float64)
    z = coupling.mask(x0, noise, t)
    for row in range(4):
        single = coupling.mask(x0[row : row + 1], noise[row : row + 1], t[row : row + 1])
        assert torch.equal(z[row : row + 1], single)
    # a 0-d tensor behaves like a float
    assert torch.equal(coupling.mask(x0, noise, torch.tensor(0.3)), coupling.mask(x0, noise, 0.3))


def test_methods_agree_in_law_on_unmask_times():
    """Two-sample KS of the unmasking times τ (K = 6, n = 5 000 tokens per method, τ = +inf mapped to 2),
    three pairs, each rejected at p < 1e-6: false-fail ≤ 3e-6."""
    n = 5_000
    samples = {}
    for offset, method in enumerate(METHODS):
        coupling = coupling_for(method)
        x0 = tokens((n,), 100 + offset)
        noise = coupling.sample_noise(x0, torch.Generator().manual_seed(200 + offset))
        tau = coupling.unmask_time(noise, x0=x0)
        samples[method] = torch.where(torch.isinf(tau), torch.full_like(tau, 2.0), tau).numpy()
    for a, b in (("gaussian", "threshold"), ("gaussian", "uniform"), ("threshold", "uniform")):
        assert stats.ks_2samp(samples[a], samples[b]).pvalue > 1e-6, (a, b)


# --------------------------------------------------------------------------- determinism


@settings(max_examples=20)
@given(method=st.sampled_from(METHODS), seed=st.integers(0, 2**62))
def test_deterministic_given_a_generator(method, seed):
    coupling = coupling_for(method)
    x0 = tokens((3, 30), 4)
    first = coupling.sample_noise(x0, torch.Generator().manual_seed(seed))
    second = coupling.sample_noise(x0, torch.Generator().manual_seed(seed))
    other = coupling.sample_noise(x0, torch.Generator().manual_seed(seed + 1))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    assert torch.equal(coupling.mask(x0, first, t), coupling.mask(x0, second, t))


@pytest.mark.parametrize("method", METHODS)
def test_noise_shapes_and_dtypes(method):
    coupling = coupling_for(method)
    x0 = tokens((2, 9), 0)
    noise = coupling.sample_noise(x0)
    if method == "gaussian":
        assert noise.shape == (2, 9, K_SMALL)
    else:
        assert noise.shape == (2, 9) and noise.dtype == torch.float64
    z = coupling.mask(x0, noise, 0.5)
    assert z.dtype == x0.dtype and z.shape == x0.shape


def test_ends_of_time():
    """t = 0: α = 1, all visible; t = 1 with α(1) = 0: all masked (every method)."""
    for method in METHODS:
        coupling = MaskedCoupling(LogLinearSchedule(eps=0.0), K_SMALL, K_SMALL, method=method)
        x0 = tokens((5, 20), 3)
        noise = coupling.sample_noise(x0, torch.Generator().manual_seed(3))
        assert torch.equal(coupling.mask(x0, noise, 0.0), x0)
        assert bool((coupling.mask(x0, noise, 1.0) == K_SMALL).all())


def test_accepts_a_calibrated_schedule():
    calibrated = calibrate(LogLinearSchedule(), K_SMALL)
    coupling = MaskedCoupling(calibrated, K_SMALL, K_SMALL)
    assert coupling.calibrated is calibrated
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedCoupling(calibrated, K_SMALL + 1, K_SMALL + 1)


def test_large_vocabulary_threshold_is_constant_memory():
    """K = 10^7 works with noise of the token shape only."""
    coupling = MaskedCoupling(LogLinearSchedule(), 10**7, 10**7, method="threshold")
    x0 = torch.randint(0, 10**7, (2, 64), generator=torch.Generator().manual_seed(0))
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(1))
    assert noise.shape == x0.shape and bool(torch.isfinite(noise).all())
    z_s, z_t = coupling.pair(x0, noise, 0.3, 0.6)
    assert not bool(((z_t != 10**7) & (z_s == 10**7)).any())


# --------------------------------------------------------------------------- bad input


def test_bad_construction():
    with pytest.raises(ValueError, match="mask_id"):
        MaskedCoupling(LogLinearSchedule(), 5, 3)
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedCoupling(LogLinearSchedule(), 1, 1)
    with pytest.raises(ValueError, match="method"):
        MaskedCoupling(LogLinearSchedule(), 5, 5, method="exact")
    with pytest.raises(ValueError, match="count"):
        max_of_standard_normals(torch.rand(3, dtype=torch.float64), 0)


@pytest.mark.parametrize("method", METHODS)
def test_bad_calls(method):
    coupling = coupling_for(method)
    x0 = tokens((2, 5), 0)
    noise = coupling.sample_noise(x0)
    with pytest.raises(ValueError, match="x0"):
        coupling.sample_noise(torch.tensor([[0, K_SMALL]]))
    with pytest.raises(ValueError, match="x0"):
        coupling.mask(torch.full((2, 5), -1), noise, 0.5)
    with pytest.raises(ValueError, match="t"):
        coupling.mask(x0, noise, 1.01)
    with pytest.raises(ValueError, match="t"):
        coupling.mask(x0, noise, -0.1)
    with pytest.raises(ValueError, match="t"):
        coupling.mask(x0, noise, math.nan)
    with pytest.raises(ValueError, match="t"):
        coupling.mask(x0, noise, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="s"):
        coupling.pair(x0, noise, 0.6, 0.5)
    with pytest.raises(ValueError, match="s"):
        coupling.pair(x0, noise, torch.tensor([0.2, 0.6], dtype=torch.float64), torch.tensor([0.3, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        coupling.mask(tokens((2, 6), 0), noise, 0.5)
    if method == "gaussian":
        with pytest.raises(ValueError, match="x0 is required"):
            coupling.visible(noise, 0.5)
    else:
        with pytest.raises(ValueError, match="float64"):
            coupling.mask(x0, noise.float(), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_law_and_rejects_mixed_devices(method):
    coupling = coupling_for(method)
    x0 = tokens((4, 2000), 9).cuda()
    noise = coupling.sample_noise(x0, torch.Generator(device="cuda").manual_seed(9))
    assert noise.device.type == "cuda"
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64, device="cuda")
    z_s, z_t = coupling.pair(x0, noise, t / 2, t)
    assert z_t.device.type == "cuda" and not bool(((z_t != K_SMALL) & (z_s == K_SMALL)).any())
    kept = int((coupling.mask(x0, noise, 0.5) == x0).sum())
    assert stats.binomtest(kept, x0.numel(), float(coupling.schedule.alpha(0.5))).pvalue > 1e-6
    with pytest.raises(ValueError, match="device|cuda"):
        coupling.mask(x0.cpu(), noise, 0.5)
    with pytest.raises(ValueError, match="t"):
        coupling.mask(x0, noise, t.cpu())
    with pytest.raises(ValueError, match="generator"):
        coupling.sample_noise(x0, generator=torch.Generator())


@pytest.mark.parametrize("method", METHODS)
def test_mismatched_devices_are_rejected_without_cuda(method):
    """The "meta" device stands in for a second device on a CPU-only machine."""
    coupling = coupling_for(method)
    x0 = tokens((2, 5), 0)
    noise = coupling.sample_noise(x0).to("meta")
    with pytest.raises(ValueError, match="device|meta"):
        coupling.mask(x0, noise, 0.5)
    from duality import project

    with pytest.raises(ValueError, match="device|meta"):
        project(torch.zeros(2, 5, K_SMALL, device="meta"), x0, K_SMALL)
