"""Tests of sampler.data: the exact sources, their likelihoods, and the quality metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sampler.data import (
    DataSource,
    ExactSource,
    HiddenMarkovSource,
    NGramSource,
    TextSource,
    frontier_at_entropy,
    get_source,
    paired_difference,
    sample_quality,
)
from sampler.data.text import ByteTokenizer, CharTokenizer, normalise_text

# A small NON-symmetric source: 3 hidden states with A ≠ Aᵀ and a non-uniform π (seed 0:
# max |A − Aᵀ| ≈ 0.27), so a transposed transition matrix changes the probabilities.  (A
# two-state source with one successor has a symmetric A, where that bug is invisible.)
TINY = dict(vocab_size=3, num_states=3, topic_size=3, support=2, successors=2, stickiness=0.5, floor=0.1)
SMALL_TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog, the end! " * 20)


def tiny_source(length: int, seed: int = 0) -> HiddenMarkovSource:
    source = HiddenMarkovSource(seed=seed, seq_len=length, **TINY)
    asymmetry = float((source.transition - source.transition.T).abs().max())
    assert asymmetry > 0.1, f"the test source must have a non-symmetric transition matrix (got {asymmetry})"
    return source


def all_sequences(vocab_size: int, length: int) -> torch.Tensor:
    """Every sequence of `length` tokens in 0..vocab_size−1, in lexicographic order: Int[V^L, L]."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)), dtype=torch.int64)


def brute_force_hmm_joint(source: HiddenMarkovSource, length: int) -> torch.Tensor:
    """p(x) for every x of all_sequences(V, length), by summing over every hidden path:

        p(x) = Σ_{s_1..s_L} π(s_1) e(x_1 | s_1, BOS) Π_{t>1} A(s_{t−1}, s_t) e(x_t | s_t, x_{t−1})

    from the source's parameters (π, A, e) only: independent of its forward algorithm.  Float64[V^L].
    """
    V = source.vocab_size
    sequences = all_sequences(V, length)  # (N, L)
    paths = all_sequences(source.num_states, length)  # (P, L)
    pi, A, e = source.initial, source.transition, source.emission
    weight = pi[paths[:, 0]][:, None] * e[paths[:, 0][:, None], V, sequences[None, :, 0]]  # (P, N)
    for t in range(1, length):
        weight = weight * A[paths[:, t - 1], paths[:, t]][:, None]
        weight = weight * e[paths[:, t][:, None], sequences[None, :, t - 1], sequences[None, :, t]]
    return weight.sum(0)


def brute_force_posteriors(source: HiddenMarkovSource, z: torch.Tensor, mask_id: int) -> torch.Tensor:
    """p(x_l = v | the visible tokens of z) = Σ_{x ⊨ z, x_l = v} p(x) / Σ_{x ⊨ z} p(x), with p from
    brute_force_hmm_joint (x ⊨ z: x agrees with z wherever z is not mask_id).  Float64[B, L, V]."""
    V, length = source.vocab_size, z.shape[1]
    sequences = all_sequences(V, length)
    joint = brute_force_hmm_joint(source, length)
    consistent = ((z[:, None, :] == sequences[None]) | (z[:, None, :] == mask_id)).all(-1)  # (B, N)
    weights = consistent.double() * joint
    one_hot = torch.nn.functional.one_hot(sequences, V).double()  # (N, L, V)
    return torch.einsum("bn,nlv->blv", weights, one_hot) / weights.sum(1)[:, None, None]


def test_same_seed_same_source_and_samples():
    a, b = get_source("exact", seed=3), get_source("exact", seed=3)
    assert torch.equal(a.emission, b.emission) and torch.equal(a.transition, b.transition)
    xa = a.sample_batch(8, 16, torch.Generator().manual_seed(5))
    xb = b.sample_batch(8, 16, torch.Generator().manual_seed(5))
    assert torch.equal(xa, xb)
    c = get_source("exact", seed=4)
    assert not torch.equal(a.emission, c.emission)


def test_default_source_shape_and_dtype():
    source = get_source()
    assert source.exact and source.vocab_size == 32 and source.default_seq_len == 64
    x = source.sample_batch(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 64) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < source.vocab_size
    assert isinstance(source.decode(x[0]), str) and len(source.decode(x[0])) == 64


def test_describe_rebuilds_the_source():
    source = get_source("exact", seed=2, seq_len=32, num_states=8)
    rebuilt = get_source(**source.describe())
    assert torch.equal(rebuilt.emission, source.emission) and rebuilt.default_seq_len == 32
    x = source.sample_batch(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(source.log_prob(x), rebuilt.log_prob(x))


def test_hmm_log_prob_matches_the_sum_over_hidden_paths():
    """log_prob (forward algorithm) equals log Σ_paths p(x, path) for all 3^5 sequences of the asymmetric source."""
    source = tiny_source(5)
    x = all_sequences(3, 5)
    expected = brute_force_hmm_joint(source, 5)
    assert abs(float(expected.sum()) - 1.0) < 1e-12  # the reference itself is a distribution
    log_p = source.log_prob(x)
    assert log_p.dtype == torch.float64
    torch.testing.assert_close(log_p, expected.log(), atol=1e-12, rtol=0)


HMM_FIT_LEVEL = 1e-3


def skip_transitions(source: HiddenMarkovSource) -> HiddenMarkovSource:
    """Planted bug in the sampler: the hidden state never moves (the transition draw is skipped), while
    log_prob still uses the transition matrix."""
    source._cum_transition = torch.eye(source.num_states, dtype=torch.float64).cumsum(1)
    return source


def emit_as_if_at_start(source: HiddenMarkovSource) -> HiddenMarkovSource:
    """Planted bug in the sampler: every token is emitted from e(· | s, BOS), ignoring the previous token."""
    start = source._cum_emission[:, source.vocab_size : source.vocab_size + 1]
    source._cum_emission = start.expand_as(source._cum_emission).clone()
    return source


def hmm_fit_pvalue(source: HiddenMarkovSource, sampler: HiddenMarkovSource) -> float:
    """The check behind test_hmm_empirical_frequencies_match_enumeration: 40 000 length-3 draws from
    `sampler`, chi-square goodness of fit against the brute-force joint of `source` over all 27
    sequences (not its log_prob, so the check is not circular); returns the p-value (the test
    passes at p > HMM_FIT_LEVEL)."""
    x = sampler.sample_batch(40_000, 3, torch.Generator().manual_seed(11))
    codes = (x * torch.tensor([9, 3, 1])).sum(1)
    observed = torch.bincount(codes, minlength=27).numpy()
    expected = brute_force_hmm_joint(source, 3).numpy() * len(x)
    return float(stats.chisquare(observed, expected).pvalue)


def test_hmm_empirical_frequencies_match_enumeration():
    """Chi-square goodness of fit of 40k samples against the brute-force joint over all 27 sequences.

    Seeded; under a correct sampler the test rejects with probability 1e-3 (its false-fail rate).
    """
    source = tiny_source(3)
    assert hmm_fit_pvalue(source, source) > HMM_FIT_LEVEL


@pytest.mark.parametrize("bug", [skip_transitions, emit_as_if_at_start], ids=lambda f: f.__name__)
def test_hmm_fit_check_catches_planted_sampler_bugs(bug):
    """A sampler that skips the transition (observed p ≈ 1e-192) or ignores the previous token (p = 0 in
    float64) is rejected at the test's size, 40 000 draws."""
    source = tiny_source(3)
    buggy = bug(tiny_source(3))
    assert hmm_fit_pvalue(source, buggy) <= HMM_FIT_LEVEL


def test_hmm_has_long_range_dependence():
    """Tokens 8 apart are dependent (through the hidden state): their mutual information is far above the estimator's bias."""
    source = get_source("exact", seed=0)
    x = source.sample_batch(100_000, 13, torch.Generator().manual_seed(0))
    a, b = x[:, 4].numpy(), x[:, 12].numpy()
    V = source.vocab_size
    joint = np.bincount(a * V + b, minlength=V * V).reshape(V, V) / len(a)
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual_information = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    plug_in_bias = (V - 1) ** 2 / (2 * len(a))  # Miller's bias of the plug-in MI under independence
    assert mutual_information > 5 * plug_in_bias


def test_entropy_rate_standard_error_is_sane():
    """SE shrinks like 1/sqrt(n), and two independent estimates agree within 5 combined SEs."""
    source = get_source("exact", seed=0, seq_len=16)
    h1, se1 = source.entropy_rate(16, num_samples=2000, seed=1)
    h2, se2 = source.entropy_rate(16, num_samples=8000, seed=2)
    assert 0 < se2 < se1 and 1.5 < se1 / se2 < 2.6
    assert abs(h1 - h2) < 5 * math.hypot(se1, se2)
    assert 0 < h2 < math.log(source.vocab_size)


def entropy_error_in_se(entropy_rate) -> float:
    """The check behind test_entropy_rate_on_tiny_source_matches_enumeration: |estimate − exact| / SE for
    `entropy_rate(source, seq_len, num_samples)` on the tiny asymmetric HMM (L = 3, 20 000 samples)
    against −Σ p log p / 3 with p the brute-force joint over all 27 sequences (not log_prob, which the
    estimate itself uses).  The test passes below 5."""
    source = tiny_source(3)
    p = brute_force_hmm_joint(source, 3)
    exact = float(-(p * p.log()).sum()) / 3
    estimate, se = entropy_rate(source, 3, 20_000)
    return abs(estimate - exact) / se


def test_entropy_rate_on_tiny_source_matches_enumeration():
    # false-fail rate < 1e-6 (normal tail at 5 SE)
    assert entropy_error_in_se(lambda source, length, n: source.entropy_rate(length, num_samples=n)) < 5


def _entropy_per_transition(source, length, n):
    """Planted bug: per-token entropy normalised by the L − 1 transitions instead of the L tokens."""
    estimate, se = source.entropy_rate(length, num_samples=n)
    return estimate * length / (length - 1), se * length / (length - 1)


def _entropy_in_bits(source, length, n):
    """Planted bug: the estimate in bits (log2) while the reference is in nats."""
    estimate, se = source.entropy_rate(length, num_samples=n)
    return estimate / math.log(2), se / math.log(2)


@pytest.mark.parametrize("bug", [_entropy_per_transition, _entropy_in_bits], ids=lambda f: f.__name__)
def test_entropy_check_catches_wrong_entropy(bug):
    """Both wrong entropies are rejected far outside 5 SE (observed ≈ 150 SE and more).  Not shown: a
    sampler bug (skip_transitions shifts the cross-entropy by only ≈ 2 SE at 20 000 samples; the
    chi-square check above catches it)."""
    assert entropy_error_in_se(bug) >= 5


def test_ngram_fit_sums_to_one_and_entropy_is_exact():
    source = NGramSource("inline", order=2, text="abab ba ab!", seq_len=3)
    V = source.vocab_size
    x = all_sequences(V, 2)
    log_p = source.log_prob(x)
    assert abs(float(log_p.exp().sum()) - 1.0) < 1e-12
    exact2 = float(-(log_p.exp() * log_p).sum()) / 2
    assert abs(source.entropy_rate(2)[0] - exact2) < 1e-12 and source.entropy_rate(2)[1] == 0.0


def test_ngram_learns_the_corpus():
    source = NGramSource("inline", order=3, text=SMALL_TEXT, seq_len=24)
    seen = torch.from_numpy(source.tokenizer.encode(normalise_text(SMALL_TEXT)[:24])).unsqueeze(0)
    shuffled = seen[:, torch.randperm(24, generator=torch.Generator().manual_seed(0))]
    assert float(source.log_prob(seen)) > float(source.log_prob(shuffled)) + 10
    rate, _ = source.entropy_rate()
    assert rate < 0.5 * math.log(source.vocab_size)
    samples = source.sample_batch(2000, 24, torch.Generator().manual_seed(0))
    quality = sample_quality(samples, source)
    assert abs(quality["excess"]) < 5 * quality["excess_se"]  # source's own samples: excess ~ 0


def test_ngram_and_text_from_local_file(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SMALL_TEXT)
    ngram = get_source(f"ngram:{corpus}", seq_len=16, order=2)
    assert ngram.exact and isinstance(ngram, NGramSource)
    text = get_source(str(corpus), seq_len=16)
    assert not text.exact and isinstance(text, TextSource)
    batch = text.sample_batch(4, generator=torch.Generator().manual_seed(0))
    assert batch.shape == (4, 16) and text.decode(batch[0]) in SMALL_TEXT
    valid = text.sample_batch(2, split="valid", generator=torch.Generator().manual_seed(0))
    assert valid.shape == (2, 16)
    rebuilt = get_source(**text.describe())
    assert torch.equal(rebuilt.splits["train"], text.splits["train"])


@given(st.text(min_size=0, max_size=200))
@settings(max_examples=50)
def test_byte_tokenizer_round_trip(s):
    full = ByteTokenizer()
    assert full.vocab_size == 256 and full.decode(full.encode(s)) == s
    if len(set(s.encode("utf-8"))) >= 2:
        compact = ByteTokenizer.fit(s)
        assert compact.vocab_size <= 256 and compact.decode(compact.encode(s)) == s


def test_compact_byte_tokenizer_needs_two_symbols():
    with pytest.raises(ValueError, match="alphabet"):
        ByteTokenizer.fit("aaaa")


def test_char_tokenizer_rejects_foreign_characters():
    tokenizer = CharTokenizer("ab ")
    assert tokenizer.decode(tokenizer.encode("ab ba")) == "ab ba"
    with pytest.raises(ValueError, match="outside the alphabet"):
        tokenizer.encode("abc")


def test_bad_input_is_named(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(ValueError, match="empty"):
        get_source(str(empty))
    with pytest.raises(ValueError, match="corpus"):
        get_source(str(tmp_path / "missing.txt"))
    source = get_source("exact", seq_len=8)
    with pytest.raises(ValueError, match=f"vocab_size={source.vocab_size}"):
        source.log_prob(torch.full((2, 8), source.vocab_size, dtype=torch.int64))
    with pytest.raises(ValueError, match="seq_len"):
        source.sample_batch(2, 0)
    with pytest.raises(ValueError, match="batch_size"):
        source.sample_batch(0, 4)
    with pytest.raises(ValueError, match="support"):
        get_source("exact", support=11)


def excess_in_se(quality: dict) -> float:
    """The check behind test_sample_quality_of_source_samples_and_of_collapse: |excess| / excess_se of
    sample_quality; samples of the source itself pass below 5."""
    return abs(quality["excess"]) / quality["excess_se"]


def test_sample_quality_of_source_samples_and_of_collapse():
    source = get_source("exact", seed=0, seq_len=32)
    good = source.sample_batch(1000, 32, torch.Generator().manual_seed(3))
    quality = sample_quality(good, source)
    # Independent draws from the source itself: excess is 0 in expectation (false-fail rate < 1e-6).
    assert excess_in_se(quality) < 5
    assert quality["per_sequence_nll"].shape == (1000,)
    collapsed = torch.zeros(1000, 32, dtype=torch.int64)
    bad = sample_quality(collapsed, source)
    assert bad["unigram_entropy"] == 0.0 and bad["pooled_unigram_entropy"] == 0.0
    assert bad["unigram_entropy"] < quality["unigram_entropy"]


@pytest.mark.parametrize("bug", [skip_transitions, emit_as_if_at_start], ids=lambda f: f.__name__)
def test_excess_check_catches_planted_sampler_bugs(bug):
    """1000 samples (same size and seed as above) of a buggy sampler of the default source: the excess
    lies far outside 5 SE (observed ≈ 33 SE for skip_transitions, ≈ 145 SE for emit_as_if_at_start)."""
    source = get_source("exact", seed=0, seq_len=32)
    samples = bug(get_source("exact", seed=0, seq_len=32)).sample_batch(1000, 32, torch.Generator().manual_seed(3))
    assert excess_in_se(sample_quality(samples, source)) >= 5


def test_paired_difference_cancels_shared_noise():
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(500, generator=generator, dtype=torch.float64) * 10
    a = shared + 0.1 + 0.01 * torch.randn(500, generator=generator, dtype=torch.float64)
    mean, se = paired_difference(a, shared)
    assert abs(mean - 0.1) < 5 * se and se < 0.01
    with pytest.raises(ValueError, match="same length"):
        paired_difference(a, shared[:10])


def test_frontier_at_entropy_interpolates():
    points = [(2.0, 1.9), (2.5, 2.2), {"unigram_entropy": 3.0, "nll_per_token": 3.2}]
    assert frontier_at_entropy(points, 2.25) == pytest.approx(2.05)
    assert frontier_at_entropy(points, 3.0) == pytest.approx(3.2)
    with pytest.raises(ValueError, match="entropy"):
        frontier_at_entropy(points, 3.5)
    assert frontier_at_entropy(points, 3.5, outside="clip") == pytest.approx(3.2)
    assert frontier_at_entropy(points, 3.5, outside="linear") == pytest.approx(3.2 + 0.5 * 2.0)


def test_sources_are_data_sources():
    """The documented class hierarchy: exact sources are DataSources with exact=True, text is not exact."""
    assert issubclass(HiddenMarkovSource, ExactSource) and issubclass(NGramSource, ExactSource)
    assert issubclass(ExactSource, DataSource) and issubclass(TextSource, DataSource)
    source = get_source()
    assert isinstance(source, HiddenMarkovSource) and source.exact and not TextSource.exact


def test_exact_denoiser_matches_brute_force_conditionals():
    """posterior_log_probs equals p(x_l | visible tokens of z) by enumeration (brute_force_posteriors),
    for every one of the 4^5 masking patterns z of length 5 on the asymmetric source."""
    source = tiny_source(5)
    m = source.vocab_size  # mask id
    z = all_sequences(m + 1, 5)  # every pattern: tokens 0..2 or the mask 3 at each position
    post = source.posterior_log_probs(z)
    assert post.shape == (len(z), 5, 3) and post.dtype == torch.float64
    torch.testing.assert_close(post.exp(), brute_force_posteriors(source, z, m), atol=1e-12, rtol=0)
    # SUBS on visible tokens: exactly 0 on the token, −inf elsewhere
    visible = z != m
    picked = post.gather(-1, torch.where(visible, z, 0).unsqueeze(-1)).squeeze(-1)
    assert (picked[visible] == 0.0).all()
    assert (torch.isneginf(post[visible]).sum(-1) == 2).all()
    # the denoiser callable returns the same posteriors (float32 by default)
    denoiser = source.denoiser()
    torch.testing.assert_close(denoiser(z[:50], torch.full((50,), 0.3)), post[:50].float())
    with pytest.raises(ValueError, match="mask_id"):
        source.posterior_log_probs(z, mask_id=1)


def test_exact_denoiser_is_a_denoiser_for_the_default_source():
    source = get_source("exact", seq_len=16)
    denoiser = source.denoiser()
    z = torch.full((2, 16), source.vocab_size)
    z[0, 3] = 5
    out = denoiser(z, torch.full((2,), 0.5))
    assert out.shape == (2, 16, source.vocab_size) and out.dtype == torch.float32
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 16), atol=1e-5)


def test_bpe_tokenizer_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path))
    corpus = tmp_path / "c.txt"
    corpus.write_text(SMALL_TEXT)
    source = get_source(str(corpus), seq_len=8, tokenizer="bpe", tokenizer_vocab_size=300)
    assert 256 < source.vocab_size <= 300
    assert source.tokenizer.decode(source.tokenizer.encode("the cat sat")) == "the cat sat"
    rebuilt = get_source(**source.describe())  # from the cached tokenizer file
    assert torch.equal(rebuilt.splits["train"], source.splits["train"])


def test_shakespeare_fetch_fails_clearly_when_offline(tmp_path, monkeypatch):
    import subprocess

    from sampler.data import text

    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="Could not fetch URL: network is unreachable")

    monkeypatch.setattr(text.subprocess, "run", offline)
    with pytest.raises(text.CorpusUnavailableError, match="offline") as caught:
        get_source("shakespeare")
    assert "mcd fetch shakespeare" in str(caught.value) and str(tmp_path / "corpora" / "shakespeare") in str(caught.value)


def test_corpus_directory_reads_all_text_files(tmp_path):
    from sampler.data.text import read_corpus

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "sub" / "b.txt").write_text("second file")
    (tmp_path / "ignored.bin").write_text("not text")
    text = read_corpus(str(tmp_path))
    assert "first file" in text and "second file" in text and "not text" not in text


def test_spec_options_after_question_mark(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(SMALL_TEXT)
    source = get_source(f"ngram:{corpus}?order=2&smoothing=0.5", seq_len=8)
    assert source.order == 2 and source.smoothing == 0.5
    assert get_source(**source.describe()).order == 2
    hmm = get_source("exact?num_states=4&stickiness=0.5")
    assert hmm.num_states == 4 and hmm.stickiness == 0.5
    with pytest.raises(ValueError, match="key=value"):
        get_source("exact?num_states")
    with pytest.raises(ValueError, match="no_such_option"):
        get_source("exact?no_such_option=1")


def test_json_ready_is_recursive_with_a_key_filter() -> None:
    """Nested dicts, lists and tuples: one-element tensors and numpy scalars become numbers, larger tensors are
    left out of dicts (None in lists, positions kept), keys become strings, and `drop_key` drops keys at any
    depth (bench.json drops the *_per_sequence tensors this way).  Planted bug caught: a non-recursive version
    (the nested tensor reaches json.dumps and fails)."""
    import json

    from sampler.data import json_ready

    record = {
        "loss": torch.tensor(0.5), "count": np.int64(3), "name": "run", "none": None,
        "rows": [{"precision": [1.5, 0.1], "precision_per_sequence": torch.ones(4), "fidelity": {2: (0.01, np.float32(0.5))},
                  "recall_per_sequence": None}],
        "pair": (torch.tensor([7]), torch.zeros(3)), "per_token": torch.zeros(2, 2),
    }
    ready = json_ready(record, drop_key=lambda key: key.endswith("_per_sequence"))
    assert ready == {"loss": 0.5, "count": 3, "name": "run", "none": None,
                     "rows": [{"precision": [1.5, 0.1], "fidelity": {"2": [0.01, 0.5]}}], "pair": [7, None]}
    assert json.loads(json.dumps(ready)) == ready
    assert type(ready["count"]) is int and type(ready["rows"][0]["fidelity"]["2"][1]) is float
    kept = json_ready(record)  # no filter: a per-sequence None is kept, its tensor sibling left out
    assert kept["rows"][0] == {"precision": [1.5, 0.1], "fidelity": {"2": [0.01, 0.5]}, "recall_per_sequence": None}
