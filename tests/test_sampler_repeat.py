"""Tests of the repeat source (sampler.data.repeat) and the exact-agreement metric (sampler.quality.agreement)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from sampler.data import ExactSource, RepeatSource, get_source
from sampler.quality.agreement import exact_agreement_rate

FIT_LEVEL = 1e-3  # chi-square goodness-of-fit tests reject a correct sampler with this probability


def all_sequences(vocab_size: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)), dtype=torch.int64)


def brute_force_joint(vocab_size: int, length: int, noise: float) -> torch.Tensor:
    """p(x) for every x of all_sequences, as (1/V) Σ_c Π_l ((1 − ε)[x_l = c] + ε/V) summed term by term."""
    rows = []
    for x in itertools.product(range(vocab_size), repeat=length):
        total = 0.0
        for c in range(vocab_size):
            total += math.prod((1 - noise) * (token == c) + noise / vocab_size for token in x) / vocab_size
        rows.append(total)
    return torch.tensor(rows, dtype=torch.float64)


def brute_force_posteriors(vocab_size: int, length: int, noise: float, z: torch.Tensor) -> torch.Tensor:
    """p(x_l = v | visible tokens of z) by summing the brute-force joint over the sequences that agree with z."""
    x = all_sequences(vocab_size, length)
    joint = brute_force_joint(vocab_size, length, noise)
    out = torch.empty(len(z), length, vocab_size, dtype=torch.float64)
    for row, pattern in enumerate(z):
        visible = pattern != vocab_size
        weights = joint * (x[:, visible] == pattern[visible]).all(dim=1)
        for position in range(length):
            for v in range(vocab_size):
                out[row, position, v] = weights[x[:, position] == v].sum() / weights.sum()
    return out


@pytest.mark.parametrize("noise", [0.0, 0.2, 1.0])
def test_log_prob_sums_to_one_and_matches_the_brute_force_joint(noise):
    source = RepeatSource(seq_len=4, vocab_size=3, noise=noise)
    x = all_sequences(3, 4)
    log_p = source.log_prob(x)
    assert log_p.dtype == torch.float64 and log_p.shape == (81,)
    assert abs(float(log_p.exp().sum()) - 1.0) < 1e-12
    torch.testing.assert_close(log_p.exp(), brute_force_joint(3, 4, noise), atol=1e-15, rtol=1e-12)
    if noise == 0.0:  # uniform over the 3 constant sequences, −inf elsewhere
        constant = (x == x[:, :1]).all(dim=1)
        assert torch.allclose(log_p[constant], torch.full((3,), -math.log(3), dtype=torch.float64))
        assert torch.isneginf(log_p[~constant]).all()


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_exact_denoiser_matches_brute_force_conditionals(noise):
    """Every one of the 4^4 masking patterns of length 4 over V = 3 (those with probability > 0)."""
    source = RepeatSource(seq_len=4, vocab_size=3, noise=noise)
    z = all_sequences(4, 4)  # tokens 0..2 or the mask 3
    if noise == 0.0:  # states of probability 0 (visible tokens differ): the limit as ε → 0+
        visible = z != 3
        first = torch.where(visible, z, 9).min(dim=1).values
        possible = (~visible | (z == first[:, None])).all(dim=1)
        limit = brute_force_posteriors(3, 4, 1e-9, z[~possible])
        torch.testing.assert_close(source.posterior_log_probs(z[~possible]).exp(), limit, atol=1e-6, rtol=0)
        z = z[possible]
    post = source.posterior_log_probs(z)
    assert post.dtype == torch.float64 and post.shape == (len(z), 4, 3)
    torch.testing.assert_close(post.exp(), brute_force_posteriors(3, 4, noise, z), atol=1e-13, rtol=0)
    visible = z != 3
    picked = post.gather(-1, torch.where(visible, z, 0).unsqueeze(-1)).squeeze(-1)
    assert (picked[visible] == 0.0).all() and (torch.isneginf(post[visible]).sum(-1) == 2).all()
    denoiser = source.denoiser()
    torch.testing.assert_close(denoiser(z[:20], torch.full((20,), 0.4)), post[:20].float())


def fit_pvalue(source: RepeatSource, draws: torch.Tensor) -> float:
    codes = (draws * torch.tensor([9, 3, 1])).sum(1)
    observed = torch.bincount(codes, minlength=27).numpy()
    expected = brute_force_joint(3, 3, source.noise).numpy() * len(draws)
    return float(stats.chisquare(observed, expected).pvalue)


def test_sampling_frequencies_match_the_exact_law():
    """40 000 length-3 draws (V = 3, ε = 0.3) against the brute-force joint over all 27 sequences; seeded,
    false-fail rate FIT_LEVEL = 1e-3 under a correct sampler."""
    source = RepeatSource(seq_len=3, vocab_size=3, noise=0.3)
    draws = source.sample_batch(40_000, generator=torch.Generator().manual_seed(5))
    assert fit_pvalue(source, draws) > FIT_LEVEL


def test_the_fit_check_rejects_a_sampler_whose_replacement_never_repeats_the_shared_token():
    """Planted sampler bug: a replaced copy drawn from the V − 1 other tokens (not uniform over all V)."""
    source = RepeatSource(seq_len=3, vocab_size=3, noise=0.3)
    generator = torch.Generator().manual_seed(5)
    shared = torch.randint(3, (40_000, 1), generator=generator).expand(40_000, 3)
    replaced = torch.rand(40_000, 3, generator=generator, dtype=torch.float64) < 0.3
    other = (shared + torch.randint(1, 3, (40_000, 3), generator=generator)) % 3
    buggy = torch.where(replaced, other, shared)
    assert fit_pvalue(source, buggy) <= FIT_LEVEL


def test_agreement_probability_and_entropy_rate_match_enumeration():
    for noise in (0.0, 0.05, 0.5):
        source = RepeatSource(seq_len=4, vocab_size=3, noise=noise)
        joint = brute_force_joint(3, 4, noise)
        x = all_sequences(3, 4)
        assert abs(source.agreement_probability() - float(joint[(x == x[:, :1]).all(dim=1)].sum())) < 1e-14
    exact = RepeatSource(vocab_size=1024)
    value, se = exact.entropy_rate(num_samples=64)
    assert value == pytest.approx(math.log(1024) / 10, abs=1e-12) and se == 0.0


def test_spec_and_describe_round_trip_and_large_vocabularies():
    source = get_source("repeat?vocab_size=8192&noise=0.05", seed=3)
    assert isinstance(source, RepeatSource) and isinstance(source, ExactSource) and source.exact
    assert source.default_seq_len == 10 and source.vocab_size == 8192 and source.noise == 0.05
    assert get_source(**source.describe()).describe() == source.describe()
    assert get_source("repeat", seq_len=6).default_seq_len == 6
    x = source.sample_batch(64, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 10) and int(x.max()) < 8192
    assert torch.isfinite(source.log_prob(x)).all()
    z = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5, x, 8192)
    post = source.posterior_log_probs(z)
    assert post.shape == (64, 10, 8192)
    torch.testing.assert_close(post.exp().sum(-1), torch.ones(64, 10, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="noise"):
        get_source("repeat?noise=1.5")
    with pytest.raises(ValueError, match="unknown option"):
        get_source("repeat?vocab=16")
    with pytest.raises(ValueError, match="mask_id"):
        source.posterior_log_probs(z, mask_id=3)


def test_exact_agreement_rate_on_constructed_samples():
    x = torch.tensor([[1, 1, 1], [1, 2, 1], [2, 2, 2], [3, 3, 1]])
    result = exact_agreement_rate(x)
    assert result["agreeing"] == 2 and result["rate"] == 0.5 and result["num_samples"] == 4
    assert result["se"] == pytest.approx(math.sqrt(0.25 / 4))
    assert "reference" not in result
    source = RepeatSource(seq_len=3, vocab_size=4, noise=0.2)
    with_reference = exact_agreement_rate(x, source)
    assert with_reference["reference"] == pytest.approx(0.85**3 + 3 * 0.05**3)
    assert with_reference["relative"] == pytest.approx(0.5 / with_reference["reference"])
    with pytest.raises(ValueError, match="agreement_probability"):
        exact_agreement_rate(x, get_source("exact", seq_len=3))
    with pytest.raises(ValueError, match="outside"):
        exact_agreement_rate(torch.tensor([[5, 5, 5]]), source)
