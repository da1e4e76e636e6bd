"""Text-sample metrics: distinct-n, held-out n-gram fidelity, gen NLL per character (planted T1-T3 in
tests/PLANTED_BUGS.md)."""

from __future__ import annotations

import math

import pytest
import torch

from sampler.quality.text_quality import distinct_ngrams, gen_nll_per_character, ngram_law, text_ngram_fidelity


def test_distinct_ngrams_counts_repeats_across_samples():
    x = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    assert distinct_ngrams(x, 1) == pytest.approx(4 / 8)
    assert distinct_ngrams(x, 2) == pytest.approx(3 / 6)  # (0,1) (1,2) (2,3), each twice
    assert distinct_ngrams(torch.tensor([[0, 1, 0, 1]]), 2) == pytest.approx(2 / 3)  # (0,1) (1,0) (0,1)
    assert distinct_ngrams(torch.tensor([[1, 0], [0, 1]]), 2) == pytest.approx(1.0)  # order matters (T1: sorted n-grams)
    with pytest.raises(ValueError, match="order"):
        distinct_ngrams(x, 5)


def test_ngram_law_counts_adjacent_pairs_in_order():
    law = ngram_law(torch.tensor([[0, 1, 1]]), 2, 2)  # pairs (0,1), (1,1): codes 1 and 3
    torch.testing.assert_close(law, torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=torch.float64))


def test_fidelity_is_near_zero_for_text_from_the_same_law_and_large_for_shuffled_text():
    """Samples and held-out text from one Markov chain score a JS near the reference's; the same tokens with
    their order shuffled within each row keep the unigram law (JS1 ~ 0) and lose the bigram law (T2: the held-out
    law replaced by the samples' own)."""
    gen = torch.Generator().manual_seed(0)
    transition = torch.tensor([[0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])

    def chain(n: int, length: int = 32) -> torch.Tensor:
        x = torch.zeros(n, length, dtype=torch.long)
        x[:, 0] = torch.randint(0, 3, (n,), generator=gen)
        for l in range(1, length):
            x[:, l] = torch.multinomial(transition[x[:, l - 1]], 1, generator=gen)[:, 0]
        return x

    heldout, reference, samples = chain(2000), chain(200), chain(200)
    shuffled = torch.stack([row[torch.randperm(32, generator=gen)] for row in samples])
    good = text_ngram_fidelity(samples, heldout, reference, 3, orders=(1, 2), num_bootstrap=20, generator=gen)
    bad = text_ngram_fidelity(shuffled, heldout, reference, 3, orders=(1, 2), num_bootstrap=20, generator=gen)
    assert good[2]["js"] < 3 * good[2]["reference_js"] + 1e-3
    assert bad[1]["js"] < 0.01 and bad[2]["js"] > 0.1


def test_gen_nll_per_character_is_the_ratio_of_sums():
    sums = torch.tensor([10.0, 30.0], dtype=torch.float64)
    result = gen_nll_per_character(sums, ["abcde", "fghijklmnopqrst"])  # 5 + 15 characters
    assert result["gen_nll_char"] == pytest.approx(40.0 / 20.0)  # T3: the mean of per-text ratios would give 2.0 too; see next
    uneven = gen_nll_per_character(torch.tensor([10.0, 10.0], dtype=torch.float64), ["a" * 2, "b" * 18])
    assert uneven["gen_nll_char"] == pytest.approx(20.0 / 20.0)  # not (5 + 10/18)/2
    assert uneven["gen_ppl_char"] == pytest.approx(math.e)
    with pytest.raises(ValueError, match="texts"):
        gen_nll_per_character(sums, ["a"])
