"""Two-axis sample quality: the recall bound (sampler.quality.recall), n-gram fidelity and typicality
(sampler.quality.fidelity) and the entry point (sampler.quality.two_axis).

Exact anchors are deterministic (brute-force enumeration of a tiny non-symmetric source).  Monte Carlo
tests are seeded; each states its false-fail rate.
"""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from sampler.data import HiddenMarkovSource, NGramSource, get_source
from sampler.data import TextSource
from sampler.quality.fidelity import (
    exact_ngram_marginals,
    ngram_codes,
    ngram_divergences,
    ngram_fidelity,
    typicality,
)
from sampler.quality.recall import (
    draw_reveal_steps,
    pattern_log_likelihoods,
    recall_bound,
    recall_per_sequence,
    reveal_probabilities,
)
from sampler.sampling import ancestral_sample, time_grid
from sampler.quality.two_axis import format_two_axis, two_axis_metrics
from theory import CosineSchedule, LogLinearSchedule

CORPUS = "the cat sat on the mat. a rat ate the hat! was it a cat? no, it's a rat."


def tiny_source(seq_len: int = 3) -> HiddenMarkovSource:
    """V = 3, two states: small enough to enumerate, and not symmetric in tokens or positions."""
    return HiddenMarkovSource(seed=3, seq_len=seq_len, vocab_size=3, num_states=2, topic_size=3, support=2)


def all_sequences(vocab_size: int, seq_len: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=seq_len)), dtype=torch.int64)


def brute_force_position_marginals(source) -> torch.Tensor:
    """p(x_l = v) for every position l by summing exp(log p) over all V^L sequences: (L, V)."""
    V, L = source.vocab_size, source.default_seq_len
    x = all_sequences(V, L)
    p = source.log_prob(x).exp()
    marginals = torch.zeros(L, V, dtype=torch.float64)
    for position in range(L):
        marginals[position].index_add_(0, x[:, position], p)
    return marginals


def step_law(probs: torch.Tensor) -> torch.Tensor:
    """P(a token reveals at step i) = p_i Π_{j<i} (1 − p_j)."""
    survive = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - probs, 0)[:-1]])
    return probs * survive


def exact_sampler_law(source, schedule, steps: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(all sequences, q_N(x)) of the N-step ancestral sampler with the exact denoiser, by summing over every
    reveal pattern π with its probability: q_N(x) = Σ_π P(π) Π_l q(x_l | z_{t(l)}(x, π))."""
    V, L = source.vocab_size, source.default_seq_len
    x = all_sequences(V, L)
    patterns = all_sequences(steps, L)
    weight = step_law(reveal_probabilities(schedule, steps))[patterns].prod(dim=1)
    reveal_step = patterns[:, None, :].expand(-1, x.shape[0], -1).contiguous()
    denoiser = source.denoiser(dtype=torch.float64)
    log_lik = pattern_log_likelihoods(denoiser, x, reveal_step, time_grid(steps).tolist()[:-1], [temperature], V)[0]
    return x, (weight[:, None] * log_lik.exp()).sum(0)


# ---------------------------------------------------------------------------------------------- recall


def test_one_at_a_time_reveal_gives_the_chain_rule_for_any_order():
    """Exact denoiser, every token revealing at its own step: each pattern's likelihood is p(x) (chain rule in
    that order), so the bound is −log p(x)/L, on the embedded source (forward algorithm as reference)."""
    source = get_source("exact", seq_len=24)
    L = source.default_seq_len
    x = source.sample_batch(6, generator=torch.Generator().manual_seed(0))
    orders = torch.stack([torch.randperm(L, generator=torch.Generator().manual_seed(s)) for s in range(12)])
    reveal_step = orders.argsort(dim=1).reshape(2, 6, L)  # token l reveals at step rank(l): distinct steps
    log_lik = pattern_log_likelihoods(source.denoiser(dtype=torch.float64), x, reveal_step,
                                      time_grid(L).tolist()[:-1], [1.0], source.vocab_size)[0]
    true = source.log_prob(x)
    torch.testing.assert_close(log_lik, true.expand(2, -1), rtol=0, atol=1e-9)
    bound = -(torch.logsumexp(log_lik, dim=0) - math.log(2)) / L
    torch.testing.assert_close(bound, -true / L, rtol=0, atol=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_one_step_bound_is_the_sum_of_one_step_marginals(temperature):
    """At 1 step every token reveals from the all-mask context: bound = −Σ_l log q_T(x_l)/L with
    q_T ∝ p(x_l)^{1/T}, the marginals from brute-force enumeration (not from the denoiser)."""
    source = tiny_source(seq_len=4)
    x = all_sequences(3, 4)
    log_marginals = brute_force_position_marginals(source).log()
    tempered = torch.log_softmax(log_marginals / temperature, dim=-1)
    expected = -tempered[torch.arange(4), x].sum(dim=1) / 4
    bound = recall_per_sequence(source.denoiser(dtype=torch.float64), LogLinearSchedule(), x, steps=1,
                                temperatures=(temperature,), k=3, generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(bound, expected, rtol=0, atol=1e-12)


def test_the_temperature_anchor_can_tell_a_missing_temperature():
    """The T = 0.6 anchor above is sensitive: the untempered marginals give a bound off by far more than its tolerance."""
    log_marginals = brute_force_position_marginals(tiny_source(seq_len=4)).log()
    gap = (torch.log_softmax(log_marginals / 0.6, dim=-1) - log_marginals).abs().max()
    assert gap > 1e-2


@pytest.mark.parametrize("schedule,steps,temperature", [
    (LogLinearSchedule(eps=0.3), 2, 0.7),
    (CosineSchedule(), 3, 1.0),
])
def test_recall_mirrors_the_real_sampler_law(schedule, steps, temperature):
    """q_N(x) built from the recall module's reveal law and tempered conditionals sums to 1 and matches the
    frequencies of ancestral_sample (20 000 draws, chi-square over the 27 sequences).  False-fail rate 1e-4
    per case (p-value threshold)."""
    source = tiny_source()
    x, q = exact_sampler_law(source, schedule, steps, temperature)
    assert abs(float(q.sum()) - 1.0) < 1e-12
    draws = ancestral_sample(source.denoiser(dtype=torch.float64), schedule, num_steps=steps, num_samples=20000, seq_len=3, mask_id=3, vocab_size=3,
                             generator=torch.Generator().manual_seed(7), temperature=temperature, batch_size=20000)
    counts = torch.bincount((draws * torch.tensor([9, 3, 1])).sum(1), minlength=27).double()
    codes = (x * torch.tensor([9, 3, 1])).sum(1)
    assert torch.equal(codes, torch.arange(27))
    assert chisquare(counts.numpy(), (q * 20000).numpy()).pvalue > 1e-4


def test_reveal_steps_follow_the_step_law():
    """Frequencies of each token's reveal step (240 000 tokens) against p_i Π_{j<i}(1 − p_j) for a 5-step
    cosine schedule; chi-square, false-fail rate 1e-4."""
    probs = reveal_probabilities(CosineSchedule(), 5)
    steps = draw_reveal_steps(4, 1000, 60, probs, torch.Generator().manual_seed(3))
    counts = torch.bincount(steps.reshape(-1), minlength=6).double()
    assert counts[5] == 0  # the last step reveals everything left
    assert chisquare(counts[:5].numpy(), (step_law(probs) * steps.numel()).numpy()).pvalue > 1e-4


def test_bound_estimator_in_expectation():
    """Tiny source, 3-step cosine schedule, T = 0.8, every sequence repeated 300 times.  The mean bound with
    k = 1 and k = 2 equals its exact expectation E[−log((1/k) Σ_j w(π_j))]/L (over all patterns, or all
    pairs of patterns; w = Π_l q), and with k = 4 it lies between −log q_N(x)/L and the k = 2 value (Jensen).
    Averages are p(x)-weighted over the 27 sequences.  False-fail rate about 1e-4 (4-SE checks)."""
    source, schedule, steps, temperature = tiny_source(), CosineSchedule(), 3, 0.8
    x = all_sequences(3, 3)
    patterns = all_sequences(steps, 3)
    weight = step_law(reveal_probabilities(schedule, steps))[patterns].prod(dim=1)
    log_lik = pattern_log_likelihoods(source.denoiser(dtype=torch.float64), x,
                                      patterns[:, None, :].expand(-1, 27, -1).contiguous(),
                                      time_grid(steps).tolist()[:-1], [temperature], 3)[0]
    p_true = source.log_prob(x).exp()
    pair_log_mean = torch.logaddexp(log_lik[:, None], log_lik[None, :]) - math.log(2)
    expected = {
        1: float((p_true * -(weight[:, None] * log_lik).sum(0)).sum()) / 3,
        2: float((p_true * -(weight[:, None, None] * weight[None, :, None] * pair_log_mean).sum((0, 1))).sum()) / 3,
    }
    exact_nll = float((p_true * -(weight[:, None] * log_lik.exp()).sum(0).log()).sum()) / 3
    assert exact_nll < expected[2] - 0.01 < expected[1] - 0.02
    for k in (1, 2, 4):
        per_seq = recall_per_sequence(source.denoiser(dtype=torch.float64), schedule, x.repeat(300, 1), steps=steps,
                                      temperatures=(temperature,), k=k, generator=torch.Generator().manual_seed(k))[0]
        values = (per_seq.reshape(300, 27) * p_true).sum(1)  # one p-weighted average per repetition
        mean, se = float(values.mean()), float(values.std() / math.sqrt(300))
        if k in expected:
            assert abs(mean - expected[k]) < 4 * se
        else:
            assert exact_nll - 4 * se < mean < expected[2] + 4 * se


def test_denoiser_is_called_at_the_sampler_times():
    """The recall scores with the denoiser at the same (t values, dtype) as ancestral_sample calls it."""
    source = tiny_source()
    exact = source.denoiser()
    calls: dict[str, set] = {"sampler": set(), "recall": set()}

    def recording(kind):
        def denoiser(z, t):
            calls[kind].update((float(v), t.dtype) for v in t)
            return exact(z, t)
        return denoiser

    ancestral_sample(recording("sampler"), CosineSchedule(), num_steps=5, num_samples=64, seq_len=3, mask_id=3, vocab_size=3, generator=torch.Generator().manual_seed(0))
    recall_per_sequence(recording("recall"), CosineSchedule(), source.sample_batch(64), steps=5, mask_id=3)
    assert calls["recall"] == calls["sampler"]
    assert len(calls["sampler"]) == 5


def test_recall_refuses_bad_input():
    source = tiny_source()
    denoiser, x = source.denoiser(), source.sample_batch(4)
    with pytest.raises(ValueError, match="final_greedy"):
        recall_bound(denoiser, LogLinearSchedule(), x, steps=4, final_greedy=True)
    with pytest.raises(ValueError, match="k must"):
        recall_bound(denoiser, LogLinearSchedule(), x, steps=4, k=0)
    with pytest.raises(ValueError, match="steps"):
        recall_bound(denoiser, LogLinearSchedule(), x, steps=0)
    with pytest.raises(ValueError, match="temperature"):
        recall_bound(denoiser, LogLinearSchedule(), x, steps=4, temperature=0.0)
    with pytest.raises(ValueError, match="mask_id"):
        recall_bound(lambda z, t: denoiser(z, t), LogLinearSchedule(), x, steps=4)


# ---------------------------------------------------------------------------------------------- fidelity


@functools.cache
def enumerated(source) -> tuple[torch.Tensor, torch.Tensor]:
    """All V^L sequences of a source and their probabilities (forward algorithm / chain product)."""
    x = all_sequences(source.vocab_size, source.default_seq_len)
    return x, source.log_prob(x).exp()


NGRAM_CHAIN = NGramSource("tiny", order=3, seq_len=4, text="the cat sat on the mat. a rat ate the hat! was it a cat?")


def brute_force_ngram_marginals(source, order: int) -> torch.Tensor:
    V = source.vocab_size
    x, p = enumerated(source)
    codes = ngram_codes(x, order, V)
    out = torch.zeros(V**order, dtype=torch.float64)
    for start in range(codes.shape[1]):
        out.index_add_(0, codes[:, start], p)
    return out / codes.shape[1]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_hmm_ngram_marginals_match_enumeration(order):
    """Tiny HMM, L = 5: the forward recursion equals enumeration of all 243 sequences; the source is not
    position-invariant (the first token's law differs from the position average), so averaging is tested."""
    source = tiny_source(seq_len=5)
    exact = exact_ngram_marginals(source, order)
    torch.testing.assert_close(exact, brute_force_ngram_marginals(source, order), rtol=0, atol=1e-14)
    first = brute_force_position_marginals(source)[0]
    assert (exact_ngram_marginals(source, 1) - first).abs().max() > 1e-3


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_chain_marginals_match_enumeration(order):
    """A trigram chain fitted on a small corpus, L = 4 (32^4 sequences enumerated)."""
    source = NGRAM_CHAIN
    torch.testing.assert_close(exact_ngram_marginals(source, order), brute_force_ngram_marginals(source, order),
                               rtol=0, atol=1e-12)


def test_exact_ngram_marginals_name_the_source_they_cannot_handle():
    text = TextSource("tiny", text=CORPUS * 4, seq_len=8)
    with pytest.raises(ValueError, match="source.*TextSource"):
        exact_ngram_marginals(text, 2)
    with pytest.raises(ValueError, match="order"):
        exact_ngram_marginals(tiny_source(), 0)


def test_ngram_divergences_by_hand():
    """counts (3, 1) against P = (½, ½): f = (¾, ¼), m = (⅝, ⅜), f̃ = (3.5/5, 1.5/5)."""
    values = ngram_divergences(torch.tensor([[3.0, 1.0], [5.0, 5.0]], dtype=torch.float64),
                               torch.tensor([0.5, 0.5], dtype=torch.float64))
    js = 0.5 * (0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)) \
        + 0.5 * (0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375))
    kl_f_p = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kl_p_f = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    torch.testing.assert_close(values["js"], torch.tensor([js, 0.0], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(values["kl_samples_exact"], torch.tensor([kl_f_p, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(values["kl_exact_samples"][0], torch.tensor(kl_p_f, dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_fidelity_separates_a_factorised_sampler_from_true_data():
    """Embedded source, 256 sequences.  True samples: bigram JS within 4 combined SE of the reference.
    One-step samples (product of marginals): bigram JS more than 10 SE above the reference.
    False-fail rate below 1e-4 (4-SE two-sided test)."""
    source = get_source("exact")
    gen = torch.Generator().manual_seed(11)
    true, reference = source.sample_batch(256, generator=gen), source.sample_batch(256, generator=gen)
    one_step = ancestral_sample(source.denoiser(), LogLinearSchedule(), num_steps=1, num_samples=256, seq_len=64, mask_id=32, vocab_size=32, generator=gen)
    good = ngram_fidelity(true, source, reference, orders=(2,), num_bootstrap=100, generator=gen)[2]
    bad = ngram_fidelity(one_step, source, reference, orders=(2,), num_bootstrap=100, generator=gen)[2]
    assert abs(good["js"] - good["reference_js"]) < 4 * math.hypot(good["js_se"], good["reference_js_se"])
    assert bad["js"] - bad["reference_js"] > 10 * math.hypot(bad["js_se"], bad["reference_js_se"])
    assert bad["kl_samples_exact"] > good["kl_samples_exact"] and bad["kl_exact_samples"] > good["kl_exact_samples"]


def test_bootstrap_se_matches_the_spread_over_fresh_draws():
    """The bootstrap SE of the bigram JS from one set of 128 true sequences is within a factor 2 of the std of
    the JS over 40 independent sets (a std from 40 draws is within ±35 % with probability > 0.99)."""
    source = get_source("exact")
    gen = torch.Generator().manual_seed(5)
    sets = [source.sample_batch(128, generator=gen) for _ in range(40)]
    spread = torch.tensor([ngram_fidelity(s, source, sets[0], orders=(2,), num_bootstrap=2, generator=gen)[2]["js"]
                           for s in sets[1:]]).std()
    se = ngram_fidelity(sets[1], source, sets[0], orders=(2,), num_bootstrap=200, generator=gen)[2]["js_se"]
    assert 0.5 < se / float(spread) < 2.0


def test_typicality_ks():
    """Disjoint value sets give KS = 1 and a tiny p; true vs true is not rejected (p > 1e-4: false-fail 1e-4)."""
    far = typicality(torch.arange(50, dtype=torch.float64), torch.arange(50, dtype=torch.float64) + 100,
                     num_bootstrap=20, generator=torch.Generator().manual_seed(0))
    assert far["ks"] == 1.0 and far["p_value"] < 1e-20
    source = get_source("exact")
    gen = torch.Generator().manual_seed(2)
    a, b = (-source.log_prob(source.sample_batch(300, generator=gen)) / 64 for _ in range(2))
    near = typicality(a, b, num_bootstrap=50, generator=gen)
    assert near["p_value"] > 1e-4 and 0 < near["ks_se"] < 0.1


# ---------------------------------------------------------------------------------------------- entry point


class CountingSource(HiddenMarkovSource):
    draws = 0

    def sample_batch(self, *args, **kwargs):
        CountingSource.draws += 1
        return super().sample_batch(*args, **kwargs)


@pytest.mark.parametrize("kwargs,name", [
    ({"k": 0}, "k must"),
    ({"ngram_orders": (1, 0)}, "ngram_orders"),
    ({"ngram_orders": (4,)}, "ngram_orders"),
    ({"steps": 0}, "steps"),
    ({"temperature": -1.0}, "temperature"),
    ({"final_greedy": True}, "final_greedy"),
    ({"schedule": None}, "schedule"),
    ({"heldout": torch.zeros(4, 2, dtype=torch.int64)}, "heldout"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_is_refused_before_any_sampling(kwargs, name):
    source = CountingSource(seed=3, seq_len=3, vocab_size=3, num_states=2, topic_size=3, support=2)
    samples = torch.zeros(4, 3, dtype=torch.int64)
    calls = []
    arguments = {"denoiser": lambda z, t: calls.append(1), "schedule": LogLinearSchedule(), "steps": 2,
                 "mask_id": 3, **kwargs}
    CountingSource.draws = 0
    with pytest.raises(ValueError, match=name):
        two_axis_metrics(samples, source, **arguments)
    assert CountingSource.draws == 0 and not calls


def test_recall_on_a_source_without_likelihood_is_refused():
    text = TextSource("tiny", text=CORPUS * 4, seq_len=8)
    samples = text.sample_batch(4)
    with pytest.raises(ValueError, match="denoiser.*exact likelihood"):
        two_axis_metrics(samples, text, denoiser=lambda z, t: None, schedule=LogLinearSchedule(), steps=2, mask_id=99)


def test_text_source_reports_exact_metrics_as_unavailable():
    text = TextSource("tiny", text=CORPUS * 4, seq_len=8)
    result = two_axis_metrics(text.sample_batch(4, generator=torch.Generator().manual_seed(0)), text)
    for name in ("precision", "recall", "fidelity", "typicality"):
        assert result[name] is None and result["unavailable"][name]
    assert "no exact likelihood" in result["unavailable"]["precision"]
    assert "unavailable" in format_two_axis(result)


def test_two_axis_metrics_on_the_embedded_source():
    """4-step exact-denoiser samples: recall above the held-out true NLL by many SEs (the factorisation cost),
    equal seeds pair exactly, fidelity rows for each order, and the text lists every metric."""
    source = get_source("exact")
    denoiser, schedule = source.denoiser(), LogLinearSchedule()
    samples = ancestral_sample(denoiser, schedule, num_steps=4, num_samples=32, seq_len=64, mask_id=32, vocab_size=32, generator=torch.Generator().manual_seed(0))
    args = {"denoiser": denoiser, "schedule": schedule, "steps": 4, "heldout": 16, "num_bootstrap": 10}
    first = two_axis_metrics(samples, source, **args, seed=3)
    again = two_axis_metrics(samples, source, **args, seed=3)
    other = two_axis_metrics(samples, source, **args, seed=4)
    assert torch.equal(first["recall"]["per_sequence"], again["recall"]["per_sequence"])
    assert not torch.equal(first["recall"]["per_sequence"], other["recall"]["per_sequence"])
    assert first["recall"]["gap"] > 5 * first["recall"]["gap_se"]
    assert first["precision"]["value"] > first["precision"]["entropy_rate"]
    assert set(first["fidelity"]) == {1, 2, 3}
    text = format_two_axis(first)
    assert "precision" in text and "recall" in text and "3-gram" in text and "typicality" in text


def test_two_axis_metrics_on_an_ngram_chain():
    """An NGramSource is exact: precision, fidelity (from its exact marginals) and typicality are all reported."""
    samples = NGRAM_CHAIN.sample_batch(16, generator=torch.Generator().manual_seed(0))
    result = two_axis_metrics(samples, NGRAM_CHAIN, ngram_orders=(1, 2), num_bootstrap=10)
    assert result["precision"]["value"] > 0 and set(result["fidelity"]) == {1, 2}
    assert result["typicality"]["ks"] >= 0 and result["unavailable"] == {"recall": "no denoiser given"}
