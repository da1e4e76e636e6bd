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

import duality.coupling as coupling_module
from duality import (
    METHODS,
    MaskedCoupling,
    max_of_standard_normals,
    sample_threshold,
    threshold_statistic,
)
from theory import CosineSchedule, LogLinearSchedule, MaskSchedule, calibrate, masked_alpha

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


KS_LEVEL = 1e-6


def max_of_normals_pvalue(draw, count: int) -> float:
    """The check behind test_max_of_normals_has_the_exact_cdf: `draw(v, count)` maps n = 20 000 seeded
    uniforms to draws of M; returns the one-sample KS p-value against P(M <= m) = Φ(m)^count, or 0 when
    a draw is not finite.  The test passes at p > KS_LEVEL."""
    v = torch.rand(20_000, dtype=torch.float64, generator=torch.Generator().manual_seed(count % 997))
    m = draw(v.clamp(min=1e-300), count)
    if not bool(torch.isfinite(m).all()):
        return 0.0
    cdf = lambda x: np.exp(count * stats.norm.logcdf(x))  # noqa: E731
    return float(stats.kstest(m.double().numpy(), cdf).pvalue)


@pytest.mark.parametrize("count", [1, 5, 1000, 10**7])
def test_max_of_normals_has_the_exact_cdf(count):
    """One-sample KS of M against P(M <= m) = Φ(m)^count, n = 20 000; reject at p < 1e-6 (false-fail ≤ 1e-6)."""
    assert max_of_normals_pvalue(max_of_standard_normals, count) > KS_LEVEL


def _max_of_one_fewer(v, count):
    """Planted bug: the max of count − 1 normals (an off-by-one in the count)."""
    return max_of_standard_normals(v, count - 1)


def _max_naive_float32(v, count):
    """Planted bug: M = Φ⁻¹(v^{1/count}) in float32; v^{1/count} rounds to 1 for large count (M = +inf)."""
    return torch.special.ndtri(v.float() ** (1.0 / count))


@pytest.mark.parametrize("count, bug", [(5, _max_of_one_fewer), (10**7, _max_naive_float32)])
def test_max_of_normals_check_catches_planted_bugs(count, bug):
    """The KS check at its own size rejects: max of 4 normals for count 5 (observed p ≈ 5e-128), and the
    float32 naive inverse at count 10^7 (about a quarter of the draws are +inf).  Not shown: an off-by-one
    at count 1000 (CDFs differ by ≈ 4e-4, below what n = 20 000 resolves)."""
    assert max_of_normals_pvalue(bug, count) <= KS_LEVEL


def test_max_of_normals_is_monotone_and_finite_in_the_tails():
    v = torch.tensor([1e-300, 1e-12, 0.5, 1 - 1e-12, 1.0], dtype=torch.float64)
    for count in (2, 50_258, 10**7, 10**9):
        m = max_of_standard_normals(v, count)
        assert bool(torch.isfinite(m[:-1]).all())
        assert bool((m[1:] >= m[:-1]).all())
        # P(M <= m) evaluated back from the draw reproduces v (inverse CDF), in log space.
        log_cdf = count * stats.norm.logcdf(m[1:-1].numpy())
        np.testing.assert_allclose(log_cdf, np.log(v[1:-1].numpy()), rtol=1e-6, atol=1e-15)


def threshold_draw_pvalue(draw) -> float:
    """The check behind test_threshold_draw_matches_the_gaussian_statistic: `draw(shape, K, generator)` is
    compared with Y = max_{j≠k} ε_j − ε_k from materialised noise (K = 6) by a two-sample KS, n = 20 000
    each; returns the p-value (the test passes at p > KS_LEVEL)."""
    n = 20_000
    generator = torch.Generator().manual_seed(11)
    y_fast = draw((n,), K_SMALL, generator=generator)
    x0 = tokens((n,), 12)
    y_slow = threshold_statistic(torch.randn(n, K_SMALL, dtype=torch.float64, generator=generator), x0)
    return float(stats.ks_2samp(y_fast.numpy(), y_slow.numpy()).pvalue)


def test_threshold_draw_matches_the_gaussian_statistic():
    """Y from the O(1) draw vs Y = max_{j≠k} ε_j − ε_k from materialised noise (K = 6): two-sample KS,
    n = 20 000 each, reject at p < 1e-6 (false-fail ≤ 1e-6)."""
    assert threshold_draw_pvalue(sample_threshold) > KS_LEVEL


def _threshold_max_of_k(shape, vocab_size, generator=None, device="cpu"):
    """Planted bug: Y = M − ε_k with M the max of K normals instead of K − 1 (same draw order)."""
    return sample_threshold(shape, vocab_size + 1, generator=generator, device=device)


def _threshold_without_clean(shape, vocab_size, generator=None, device="cpu"):
    """Planted bug: the clean coordinate is forgotten, Y = M (max of K − 1 normals) instead of M − ε_k."""
    v = torch.rand(shape, dtype=torch.float64, device=device, generator=generator).clamp_(min=1e-300)
    return max_of_standard_normals(v, vocab_size - 1)


def test_threshold_draw_check_catches_max_of_k_normals():
    """The KS check rejects the max of K normals instead of K − 1 at K = 6 (observed p ≈ 2e-13)."""
    assert threshold_draw_pvalue(_threshold_max_of_k) <= KS_LEVEL


def threshold_cdf_pvalue(draw, vocab_size: int) -> float:
    """The check behind test_threshold_cdf_is_masked_alpha: u = α_K(Y) of n = 20 000 draws
    `draw(shape, K, generator)` against U(0, 1), one-sample KS p-value (passes at p > KS_LEVEL)."""
    y = draw((20_000,), vocab_size, generator=torch.Generator().manual_seed(vocab_size))
    u = np.asarray(masked_alpha(y.numpy(), vocab_size))
    return float(stats.kstest(u, "uniform").pvalue)


def test_threshold_cdf_is_masked_alpha():
    """α_K is the CDF of Y: u = α_K(Y) is U(0, 1).  One-sample KS, n = 20 000, at K = 6 and K = 50 258;
    reject at p < 1e-6 each (false-fail ≤ 2e-6)."""
    for vocab_size in (K_SMALL, 50_258):
        assert threshold_cdf_pvalue(sample_threshold, vocab_size) > KS_LEVEL


@pytest.mark.parametrize("vocab_size, bug", [(K_SMALL, _threshold_max_of_k), (50_258, _threshold_without_clean)])
def test_threshold_cdf_check_catches_planted_bugs(vocab_size, bug):
    """The KS check rejects the max of K normals at K = 6 (observed p ≈ 3e-23) and a draw that drops the
    clean coordinate at K = 50 258.  Not shown: the K-vs-(K − 1) off-by-one at K = 50 258 (p ≈ 0.16 at
    n = 20 000: the two laws differ by O(1/K))."""
    assert threshold_cdf_pvalue(bug, vocab_size) <= KS_LEVEL


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


MASK_RATE_LEVEL = 1e-7
MASK_RATE_TIMES = (0.05, 0.3, 0.5, 0.8, 0.99)


def mask_rate_pvalues(coupling: MaskedCoupling, schedule) -> list[tuple[float, float, float, float]]:
    """The check behind test_mask_rate_matches_alpha: n = 6 000 tokens (gaussian) or 20 000 masked by
    `coupling` at each of MASK_RATE_TIMES; returns (t, kept/n, α(t) of `schedule`, exact two-sided binomial
    p-value) per time.  The test passes when every p-value is > MASK_RATE_LEVEL."""
    n = 6_000 if coupling.method == "gaussian" else 20_000
    x0 = tokens((n,), 21)
    noise = coupling.sample_noise(x0, torch.Generator().manual_seed(22))
    rows = []
    for t in MASK_RATE_TIMES:
        z = coupling.mask(x0, noise, t)
        kept = int((z == x0).sum())
        assert int((z == K_SMALL).sum()) == n - kept
        alpha = float(schedule.alpha(t))
        rows.append((t, kept / n, alpha, float(stats.binomtest(kept, n, alpha).pvalue)))
    return rows


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("schedule_name", ["loglinear", "cosine"])
def test_mask_rate_matches_alpha(method, schedule_name):
    """P(visible at t) = α(t) per token.  Exact two-sided binomial test per time at level 1e-7
    (5 times: false-fail ≤ 5e-7 per case), n = 6 000 tokens (gaussian) or 20 000."""
    coupling = coupling_for(method, schedule_name)
    for t, rate, alpha, pvalue in mask_rate_pvalues(coupling, coupling.schedule):
        assert pvalue > MASK_RATE_LEVEL, (method, t, rate, alpha)


def _scaled(schedule, factor: float) -> MaskSchedule:
    return MaskSchedule(alpha=lambda t: factor * schedule.alpha(t), alpha_deriv=lambda t: factor * schedule.alpha_deriv(t))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("schedule_name", ["loglinear", "cosine"])
def test_mask_rate_check_catches_a_schedule_two_percent_off(method, schedule_name):
    """Planted bug: the coupling follows α_bug = 0.98·α (2 % relative) while the check uses α.  Rejected
    at the test's own sizes (observed smallest p ≤ 1e-14 in every case)."""
    schedule = LogLinearSchedule() if schedule_name == "loglinear" else CosineSchedule()
    buggy = MaskedCoupling(_scaled(schedule, 0.98), K_SMALL, K_SMALL, method=method)
    assert min(p for *_, p in mask_rate_pvalues(buggy, schedule)) <= MASK_RATE_LEVEL


@pytest.mark.parametrize("method", ["gaussian", "threshold"])
@pytest.mark.parametrize("schedule_name", ["loglinear", "cosine"])
def test_mask_rate_check_catches_calibration_with_one_fewer_token(method, schedule_name):
    """Planted bug: ν(t) calibrated with α_{K−1}⁻¹ instead of α_K⁻¹ (observed smallest p ≤ 1e-8)."""
    schedule = LogLinearSchedule() if schedule_name == "loglinear" else CosineSchedule()
    buggy = MaskedCoupling(schedule, K_SMALL, K_SMALL, method=method)
    buggy._calibrated = calibrate(schedule, K_SMALL - 1)
    assert min(p for *_, p in mask_rate_pvalues(buggy, schedule)) <= MASK_RATE_LEVEL


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


METHOD_PAIRS = (("gaussian", "threshold"), ("gaussian", "uniform"), ("threshold", "uniform"))


def unmask_time_pvalues() -> dict[tuple[str, str], float]:
    """The check behind test_methods_agree_in_law_on_unmask_times: τ of n = 20 000 tokens per method
    (K = 6, τ = +inf mapped to 2), two-sample KS p-value per pair of methods (passes at p > KS_LEVEL each).
    n was 5 000, at which the K-normals planted bug below was not caught (p ≈ 6e-6); at 20 000 it is."""
    n = 20_000
    samples = {}
    for offset, method in enumerate(METHODS):
        coupling = coupling_for(method)
        x0 = tokens((n,), 100 + offset)
        noise = coupling.sample_noise(x0, torch.Generator().manual_seed(200 + offset))
        tau = coupling.unmask_time(noise, x0=x0)
        samples[method] = torch.where(torch.isinf(tau), torch.full_like(tau, 2.0), tau).numpy()
    return {(a, b): float(stats.ks_2samp(samples[a], samples[b]).pvalue) for a, b in METHOD_PAIRS}


def test_methods_agree_in_law_on_unmask_times():
    """Two-sample KS of the unmasking times τ (K = 6, n = 20 000 tokens per method, τ = +inf mapped to 2),
    three pairs, each rejected at p < 1e-6: false-fail ≤ 3e-6."""
    for pair, pvalue in unmask_time_pvalues().items():
        assert pvalue > KS_LEVEL, pair


def test_unmask_time_check_catches_threshold_noise_with_k_normals(monkeypatch):
    """Planted bug: the threshold method's noise is the max of K normals minus ε_k (instead of K − 1).
    Both pairs involving it are rejected (observed p ≈ 2e-19 and 6e-18)."""
    monkeypatch.setattr(coupling_module, "sample_threshold", _threshold_max_of_k)
    pvalues = unmask_time_pvalues()
    assert pvalues[("gaussian", "threshold")] <= KS_LEVEL and pvalues[("threshold", "uniform")] <= KS_LEVEL


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


# --------------------------------------------------------------------------- wrong noise, wrong mask id


def _noise_of(method: str, shape: tuple[int, ...] = (4, 50), seed: int = 11, vocab_size: int = K_SMALL) -> torch.Tensor:
    coupling = coupling_for(method) if vocab_size == K_SMALL else MaskedCoupling(LogLinearSchedule(), vocab_size, vocab_size, method=method)
    return coupling.sample_noise(tokens(shape, seed, vocab_size), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("drawn_by", "read_by"), [("threshold", "uniform"), ("uniform", "threshold")])
def test_noise_of_another_method_is_refused(drawn_by, read_by):
    """The noise tensor sample_noise returns records which coupling drew it (method and K)."""
    x0 = tokens((4, 50), 11)
    noise = _noise_of(drawn_by)
    coupling = coupling_for(read_by)
    for call in (
        lambda: coupling.mask(x0, noise, 0.2),
        lambda: coupling.pair(x0, noise, 0.1, 0.2),
        lambda: coupling.visible(noise, 0.2, x0=x0),
        lambda: coupling.unmask_time(noise, x0=x0),
    ):
        with pytest.raises(ValueError, match=f"noise.*{drawn_by}.*{read_by}"):
            call()


def test_threshold_noise_outside_the_unit_interval_is_refused_by_uniform_even_untagged():
    """A copy loses the record; uniform noise must then still lie in (0, 1).  Threshold draws of 200
    tokens at K = 6 all inside (0, 1) would have probability < 0.3^200 (and the draw is seeded)."""
    x0 = tokens((4, 50), 11)
    noise = _noise_of("threshold").clone()
    with pytest.raises(ValueError, match=r"noise.*\(0, 1\)"):
        coupling_for("uniform").mask(x0, noise, 0.2)


def test_noise_for_another_vocabulary_is_refused():
    x0 = tokens((4, 50), 11)
    noise = _noise_of("threshold", vocab_size=K_SMALL + 4)
    with pytest.raises(ValueError, match=f"noise.*vocab_size={K_SMALL + 4}"):
        coupling_for("threshold").mask(x0, noise, 0.2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_infinite_noise_is_refused(method, bad):
    """All-NaN noise used to mask every token even at t = 0; one bad entry is enough to refuse."""
    x0 = tokens((3, 7), 2)
    coupling = coupling_for(method)
    for noise in (torch.full_like(coupling.sample_noise(x0), bad), coupling.sample_noise(x0)):
        noise.view(-1)[5] = bad
        for call in (lambda: coupling.mask(x0, noise, 0.0), lambda: coupling.visible(noise, 0.3, x0=x0),
                     lambda: coupling.unmask_time(noise, x0=x0)):
            with pytest.raises(ValueError, match="noise"):
                call()


@pytest.mark.parametrize("bad", [0.0, -0.25, 1.0, 1.5])
def test_uniform_noise_outside_the_open_unit_interval_is_refused(bad):
    """sample_noise draws u in (0, 1); u = 1 would stay masked even at t = 0, where α = 1."""
    x0 = tokens((3, 7), 2)
    noise = coupling_for("uniform").sample_noise(x0)
    noise[1, 3] = bad
    with pytest.raises(ValueError, match=r"noise.*\(0, 1\)"):
        coupling_for("uniform").mask(x0, noise, 0.5)


def test_valid_hand_made_noise_is_accepted_and_shows_everything_at_time_zero():
    """Validation must not refuse the extremes of what the methods produce (u in (0, 1), any finite Y),
    and such noise shows every token at t = 0 (α(0) = 1, ν(0) = +inf)."""
    x0 = tokens((1, 4), 0)
    uniform = torch.tensor([[1e-300, 0.5, 0.999, 1.0 - 2.0**-53]], dtype=torch.float64)
    assert torch.equal(coupling_for("uniform").mask(x0, uniform, 0.0), x0)
    threshold = torch.tensor([[-1e300, 0.0, 3.0, 1e300]], dtype=torch.float64)
    assert torch.equal(coupling_for("threshold").mask(x0, threshold, 0.0), x0)


@pytest.mark.parametrize("mask_id", [-1, -K_SMALL])
def test_negative_mask_id_is_refused(mask_id):
    """A negative mask id used to be accepted and emitted as a token (-1 is no token id anywhere)."""
    with pytest.raises(ValueError, match="mask_id"):
        MaskedCoupling(LogLinearSchedule(), K_SMALL, mask_id)
