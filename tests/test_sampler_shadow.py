"""The noise-shared (shadow) sampler: the sorted-quantile draw, determinism, nesting, its law against
the ordinary ancestral sampler's (exact by enumeration on a toy), bad input, and the verify claim."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from duality import MaskedCoupling
from proofs_checks import stats
from sampler.sampling import ancestral_sample, time_grid
from sampler.shadow.noise import (
    ShadowNoise,
    noise_shared_sample,
    sample_shadow_noise,
    sorted_quantile_draw,
)
from theory import CosineSchedule, LogLinearSchedule

K, L = 3, 3
MASK = K

# A context- and time-dependent fake denoiser over K = 3 tokens, L = 3 positions (SUBS on visible ones):
# logit(x_l = v | z, t) = BASE[l, v] + Σ_{j visible} PAIR[|l − j|, z_j, v] + t·TILT[v], and category 2 is
# impossible at position 0 while position 1 shows a 0 (a zero-probability category the draw must avoid).
BASE = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4], [-0.3, 0.2, 0.4]], dtype=torch.float64)
PAIR = torch.tensor([[[1.2, -0.5, 0.0], [-0.8, 1.0, 0.3], [0.1, -0.6, 1.4]],
                     [[0.6, 0.0, -0.3], [0.0, -0.7, 0.9], [-0.4, 0.8, 0.2]]], dtype=torch.float64)
TILT = torch.tensor([0.9, -0.4, -0.5], dtype=torch.float64)


def context_denoiser(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    n, length = z.shape
    logits = BASE[:length].expand(n, length, K).clone() + t.double().view(n, 1, 1) * TILT
    visible = z != MASK
    for l in range(length):
        for j in range(length):
            if j != l:
                gain = PAIR[abs(l - j) - 1][torch.where(visible[:, j], z[:, j], 0)]
                logits[:, l] += torch.where(visible[:, j : j + 1], gain, torch.zeros_like(gain))
    forbidden = visible[:, 1] & (z[:, 1] == 0)
    logits[forbidden, 0, 2] = -math.inf
    log_probs = torch.log_softmax(logits, dim=-1)
    subs = torch.full_like(log_probs, -math.inf).scatter_(-1, torch.where(visible, z, 0).unsqueeze(-1), 0.0)
    return torch.where(visible.unsqueeze(-1), subs, log_probs)


def exact_ancestral_law(schedule, num_steps: int, temperature: float = 1.0, start: tuple[int, ...] = (MASK,) * L) -> dict:
    """The law of N ancestral steps by enumeration (independent of both samplers): from each state z_t,
    each masked token independently stays masked (1 − r) or shows v (r·p^{1/T}(v | z_t)/Σ),
    r = (α_s − α_t)/(1 − α_t) on the grid t_i = i/N."""
    law = {start: 1.0}
    grid = [i / num_steps for i in range(num_steps, -1, -1)]
    for t, s in zip(grid[:-1], grid[1:]):
        a_t, a_s = float(schedule.alpha(t)), float(schedule.alpha(s))
        reveal = (a_s - a_t) / (1 - a_t)
        nxt: dict = {}
        for state, mass in law.items():
            z = torch.tensor([state])
            tempered = torch.softmax(context_denoiser(z, torch.tensor([t]))[0] / temperature, dim=-1)
            options = []
            for l, token in enumerate(state):
                if token != MASK:
                    options.append([(token, 1.0)])
                else:
                    options.append([(MASK, 1 - reveal)] + [(v, reveal * float(tempered[l, v])) for v in range(K)])
            for combo in itertools.product(*options):
                key = tuple(v for v, _ in combo)
                nxt[key] = nxt.get(key, 0.0) + mass * math.prod(p for _, p in combo)
        law = nxt
    return law


def joint_frequencies(samples: torch.Tensor) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    cells = list(itertools.product(range(K + 1), repeat=L))
    codes = (samples * torch.tensor([(K + 1) ** (L - 1 - i) for i in range(L)])).sum(-1)
    counts = torch.bincount(codes, minlength=(K + 1) ** L).numpy()
    return counts, cells


def law_test(samples: torch.Tensor, law: dict, delta: float, name: str) -> stats.TestResult:
    counts, cells = joint_frequencies(samples)
    claimed = np.array([law.get(c, 0.0) for c in cells])
    n = samples.shape[0]
    return stats.binomial_family_test(name, counts, np.full(len(cells), n), claimed, delta, 1e-3)


# ------------------------------------------------------------------------- the category draw


def test_sorted_quantile_draw_reads_the_quantile_over_descending_categories() -> None:
    log_p = torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64).log().expand(6, 3)
    c = torch.tensor([0.01, 0.59, 0.61, 0.89, 0.91, 1 - 2**-53], dtype=torch.float64)
    # sorted order: 1 (0.6), 2 (0.3), 0 (0.1)
    assert sorted_quantile_draw(log_p, c).tolist() == [1, 1, 2, 2, 0, 0]
    ties = torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64).log().expand(3, 3)
    assert sorted_quantile_draw(ties, torch.tensor([0.4, 0.6, 0.8], dtype=torch.float64)).tolist() == [1, 0, 2]
    zero = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64).log()
    assert sorted_quantile_draw(zero, torch.tensor([1 - 2**-53], dtype=torch.float64)).tolist() == [2]
    # temperature 0.5 squares the weights: 0.36, 0.09, 0.01 over 0.46
    assert sorted_quantile_draw(log_p[:2], torch.tensor([0.78, 0.79], dtype=torch.float64), 0.5).tolist() == [1, 2]


def test_sorted_quantile_draw_has_the_tempered_law() -> None:
    """c on a fine grid of midpoints: category frequencies are p^{1/T}/Σ within the grid step."""
    p = torch.tensor([0.05, 0.4, 0.25, 0.0, 0.3], dtype=torch.float64)
    n = 100_000
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    for temperature in (1.0, 0.7):
        draws = sorted_quantile_draw(p.log().expand(n, 5), c, temperature)
        target = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
        freq = torch.bincount(draws, minlength=5).double() / n
        assert (freq - target).abs().max() < 2.0 / n


def reference_draw(log_probs: torch.Tensor, quantiles: torch.Tensor, temperature: float) -> torch.Tensor:
    """The draw's formula written plainly (sorted_quantile_draw's docstring; the code before its fast
    paths): w = exp((log p − max)/T) in float64, σ = stable descending sort, float64 cumsum, first
    cumulative sum > c·W, capped at the last positive weight."""
    logits = log_probs.to(torch.float64)
    weights = torch.exp((logits - logits.amax(dim=-1, keepdim=True)) / temperature)
    targets = quantiles.to(torch.float64) * weights.sum(dim=-1)
    sorted_weights, order = torch.sort(weights, dim=-1, descending=True, stable=True)
    rank = torch.searchsorted(torch.cumsum(sorted_weights, dim=-1), targets.unsqueeze(-1), right=True).squeeze(-1)
    rank = torch.minimum(rank, (sorted_weights > 0).sum(dim=-1) - 1)
    return torch.gather(order, -1, rank.unsqueeze(-1)).squeeze(-1)


def _test_rows(vocab_size: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """float32 log-probs of `rows` rows in six kinds: flat N(0,1), peaked 3·N(0,1), Zipf(1) and Zipf(1.5)
    over a random permutation, heavy-tailed Cauchy logits, and rows with ties at every level
    (log-probs rounded to 1/2) and −inf entries."""
    kinds = [
        torch.randn(rows, vocab_size, generator=generator),
        3 * torch.randn(rows, vocab_size, generator=generator),
        -torch.log1p(torch.argsort(torch.rand(rows, vocab_size, generator=generator), dim=-1).float()),
        -1.5 * torch.log1p(torch.argsort(torch.rand(rows, vocab_size, generator=generator), dim=-1).float()),
        torch.tan(torch.pi * (torch.rand(rows, vocab_size, generator=generator) - 0.5)).clamp(-30, 30),
        torch.round(2 * torch.randn(rows, vocab_size, generator=generator)) / 2,
    ]
    kinds[-1][:, ::7] = float("-inf")
    return torch.log_softmax(torch.cat(kinds), dim=-1)


@pytest.mark.parametrize("vocab_size, temperature", [(2000, 1.0), (2000, 0.7), (40, 1.0), (50_257, 1.0)])
def test_fast_paths_equal_the_plain_formula(vocab_size: int, temperature: float) -> None:
    """Default (top-k, then the mass histogram, then the full sort), every top_k and top_k=None return
    exactly reference_draw's categories on rows of every kind, with uniform c and with c·W placed on
    the full sort's cumulative sums (within 0 to 2 ulp, where only the exact sums decide; the histogram's
    guard must send those rows to the full sort), float32 and float64 inputs; each fast path resolves some rows."""
    import sampler.shadow.noise as shadow

    generator = torch.Generator().manual_seed(vocab_size)
    log_p = _test_rows(vocab_size, 5 if vocab_size > 10_000 else 60, generator)
    n = log_p.shape[0]
    uniform = torch.rand(n, dtype=torch.float64, generator=generator)
    weights = torch.exp((log_p.double() - log_p.double().amax(-1, keepdim=True)) / temperature)
    cdf = torch.cumsum(torch.sort(weights, dim=-1, descending=True, stable=True).values, dim=-1)
    boundary = cdf.gather(-1, torch.randint(0, 12, (n, 1), generator=generator)).squeeze(-1) / weights.sum(-1)
    nudged = torch.nextafter(boundary, torch.zeros_like(boundary))
    for c in (uniform, boundary.clamp(max=1 - 2**-53), nudged):
        expected = reference_draw(log_p, c, temperature)
        for top_k in (shadow.TOP_K, 1, 8, None):
            for inputs in (log_p, log_p.double()):
                assert torch.equal(sorted_quantile_draw(inputs, c, temperature, top_k=top_k), expected), top_k
    w, targets = shadow._quantile_weights(log_p, uniform, temperature)
    in_top_k, _ = shadow._draw_within_top_k(w, targets, min(shadow.TOP_K, vocab_size // 5))
    by_mass, _ = shadow._draw_by_mass_histogram(w, targets, torch.ones(n, dtype=torch.bool))
    assert 0 < int(in_top_k.sum()) < n and int((by_mass & ~in_top_k).sum()) > 0
    w, targets = shadow._quantile_weights(log_p, boundary, temperature)
    guarded, _ = shadow._draw_by_mass_histogram(w, targets, torch.ones(n, dtype=torch.bool))
    assert not bool(guarded.all())  # some boundary rows left to the full sort


@pytest.mark.parametrize("bad, match", [(float("nan"), "NaN"), (float("inf"), r"\+inf"), (None, "zero total probability")])
def test_sorted_quantile_draw_refuses_bad_rows(bad: float | None, match: str) -> None:
    """A NaN or +inf anywhere, or a row of −inf, is refused by name (weights would be NaN, and a NaN weight's
    bits would land outside the histogram's bins)."""
    log_p = torch.log_softmax(torch.randn(3, 500, generator=torch.Generator().manual_seed(0)), dim=-1)
    if bad is None:
        log_p[1] = float("-inf")
    else:
        log_p[2, 7] = bad
    with pytest.raises(ValueError, match=match):
        sorted_quantile_draw(log_p, torch.full((3,), 0.5, dtype=torch.float64))


# ------------------------------------------------------------------------------ determinism


def test_noise_fixes_the_output_across_batch_sizes_and_seeds_differ() -> None:
    schedule = LogLinearSchedule()
    noise = sample_shadow_noise(40, L, schedule, K, MASK, torch.Generator().manual_seed(5))
    first = noise_shared_sample(context_denoiser, schedule, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K, batch_size=7)
    again = noise_shared_sample(context_denoiser, schedule, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K, batch_size=40)
    assert torch.equal(first, again) and first.dtype == torch.int64 and bool((first < K).all())
    redrawn = sample_shadow_noise(40, L, schedule, K, MASK, torch.Generator().manual_seed(5))
    assert torch.equal(redrawn.reveal, noise.reveal) and torch.equal(redrawn.category, noise.category)
    other = sample_shadow_noise(40, L, schedule, K, MASK, torch.Generator().manual_seed(6))
    assert not torch.equal(noise_shared_sample(context_denoiser, schedule, num_steps=4, noise=other, mask_id=MASK, vocab_size=K), first)


@pytest.mark.parametrize("method", ["uniform", "threshold"])
def test_reveals_follow_the_coupling_and_are_nested(method: str) -> None:
    """The denoiser sees z_{t_i} at step i: its visible set is exactly the coupling's visible set at t_i,
    nested in i, and a revealed token never changes afterwards."""
    schedule = CosineSchedule()
    noise = sample_shadow_noise(64, 8, schedule, K, MASK, torch.Generator().manual_seed(1), method=method)
    coupling = MaskedCoupling(schedule, K, MASK, method=method)
    assert not bool(coupling.visible(noise.reveal, 1.0).any())  # conditioned on masked at t = 1
    seen: dict[float, torch.Tensor] = {}

    def recording(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen[round(float(t[0]), 6)] = z.clone()  # t arrives as float32, as in ancestral_sample
        return torch.zeros(*z.shape, K)

    out = noise_shared_sample(recording, schedule, num_steps=6, noise=noise, mask_id=MASK, vocab_size=K, batch_size=64)
    times = time_grid(6).tolist()
    previous = torch.full((64, 8), MASK)
    for t, s in zip(times[:-1], times[1:]):
        newly_visible = coupling.visible(noise.reveal, s) & ~coupling.visible(noise.reveal, t)
        key = round(t, 6)
        assert (key in seen) == bool(newly_visible.any())  # the denoiser is skipped only when nothing is revealed
        if key in seen:
            z = seen[key]
            assert torch.equal(z != MASK, coupling.visible(noise.reveal, t))
            kept = previous != MASK
            assert torch.equal(z[kept], previous[kept])
            previous = z
    assert bool((out != MASK).all())
    assert torch.equal(out[previous != MASK], previous[previous != MASK])


def test_each_step_reveals_a_masked_token_with_the_ancestral_probability() -> None:
    """Step t -> s reveals each token masked at t with probability (α_s − α_t)/(1 − α_t), the first step
    from t = 1 included (α(1) = 0.5 here, so treating "visible at t = 1" tokens as revealed at the first
    step would give α_s instead: 0.75 vs 0.5).  Exact binomial per step over 4 000 × 4 tokens, false-fail
    rate 1e-7 for the four steps together."""
    schedule = LogLinearSchedule(eps=0.5)
    noise = sample_shadow_noise(4000, 4, schedule, K, MASK, torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []

    def recording(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return torch.zeros(*z.shape, K)

    out = noise_shared_sample(recording, schedule, num_steps=4, noise=noise, mask_id=MASK, vocab_size=K, batch_size=4000)
    states = seen + [out]
    assert len(states) == 5  # every step reveals something at this size
    grid = time_grid(4).tolist()
    masked = np.array([int((z == MASK).sum()) for z in states[:-1]])
    revealed = masked - np.array([int((z == MASK).sum()) for z in states[1:]])
    claimed = np.array([(float(schedule.alpha(s)) - float(schedule.alpha(t))) / (1 - float(schedule.alpha(t)))
                        for t, s in zip(grid[:-1], grid[1:])])
    result = stats.binomial_family_test("reveal probability per step", revealed, masked, claimed, 1e-7, 1e-3)
    assert result.passed, result.details["cells"]


# --------------------------------------------------------------------------------------- law


# (steps, temperature, pinned tokens, α(1)).  α(1) = 0.3: many tokens drawn by the coupling would be visible
# already at t = 1 (the per-step test below is what detects mishandling them; the final law moves little).
LAW_CASES = [(1, 1.0, None, 1e-3), (2, 1.0, None, 1e-3), (3, 1.0, None, 1e-3), (2, 0.6, None, 1e-3),
             (3, 1.0, (MASK, 2, MASK), 1e-3), (2, 1.0, None, 0.3)]


@pytest.mark.parametrize("num_steps, temperature, start, alpha_end", LAW_CASES)
def test_law_equals_the_ancestral_samplers_exact_law(num_steps: int, temperature: float, start, alpha_end: float) -> None:
    """Full joint law over the 4^3 outcomes (mask included) of 20 000 sequences, each cell an exact
    binomial test against the enumerated ancestral law (Bonferroni): the noise-shared sampler, and the
    ordinary ancestral_sample as a check of the enumeration.  False-fail rate 2e-7 per case (1.2e-6 for
    the file); an error of 0.03 in any cell is detected with probability >= 0.999 (binomial_family_test)."""
    schedule = LogLinearSchedule(eps=alpha_end)
    n = 20_000
    start = (MASK,) * L if start is None else start
    fixed = torch.tensor([start]).expand(n, L).clone()
    law = exact_ancestral_law(schedule, num_steps, temperature, start)
    assert abs(sum(law.values()) - 1) < 1e-12
    noise = sample_shadow_noise(n, L, schedule, K, MASK, torch.Generator().manual_seed(100 + num_steps))
    shadow = noise_shared_sample(context_denoiser, schedule, num_steps=num_steps, noise=noise, mask_id=MASK, vocab_size=K, temperature=temperature,
                                 fixed=fixed, batch_size=4096)
    ancestral = ancestral_sample(context_denoiser, schedule, num_steps=num_steps, num_samples=n, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(7),
                                 temperature=temperature, fixed=fixed, batch_size=4096)
    for name, samples in (("shadow", shadow), ("ancestral", ancestral)):
        result = law_test(samples, law, 1e-7, name)
        assert result.passed, (name, [c for c in result.details["cells"] if not c["passed"]])


def test_law_check_rejects_a_shared_category_noise() -> None:
    """The check above at the same size rejects the planted bug "one category noise per sequence"
    (right marginals, comonotone tokens) at 1 step."""
    schedule = LogLinearSchedule()
    n = 20_000
    noise = sample_shadow_noise(n, L, schedule, K, MASK, torch.Generator().manual_seed(101))
    shared = ShadowNoise(noise.reveal, noise.category[:, :1].expand(n, L).contiguous(), noise.method, K)
    samples = noise_shared_sample(context_denoiser, schedule, num_steps=1, noise=shared, mask_id=MASK, vocab_size=K, batch_size=4096)
    assert not law_test(samples, exact_ancestral_law(schedule, 1), 1e-7, "shared c").passed


# ------------------------------------------------------------------------- noise conditioning


def test_a_noise_conditioned_denoiser_gets_its_batchs_noise() -> None:
    schedule = LogLinearSchedule()
    noise = sample_shadow_noise(10, L, schedule, K, MASK, torch.Generator().manual_seed(2))
    batches: list[torch.Tensor] = []

    class Reader:
        reads_shadow_noise = True

        def __call__(self, z: torch.Tensor, t: torch.Tensor, *, noise: ShadowNoise) -> torch.Tensor:
            batches.append(noise.category)
            # put all mass on the token (c > 1/2): the output then reads the noise directly
            chosen = (noise.category > 0.5).long()
            return torch.full((*z.shape, K), -math.inf).scatter_(-1, chosen.unsqueeze(-1), 0.0)

    out = noise_shared_sample(Reader(), schedule, num_steps=1, noise=noise, mask_id=MASK, vocab_size=K, batch_size=4)
    assert [b.shape[0] for b in batches] == [4, 4, 2]  # one step: one call per batch
    assert torch.equal(batches[0], noise.category[:4]) and torch.equal(batches[2], noise.category[8:])
    assert torch.equal(out, (noise.category > 0.5).long())


# -------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_sampling() -> None:
    schedule = LogLinearSchedule()
    noise = sample_shadow_noise(4, L, schedule, K, MASK, torch.Generator().manual_seed(0))
    calls = []

    def counting(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return context_denoiser(z, t)

    cases = [
        (dict(num_steps=0), "num_steps"),
        (dict(fixed=torch.full((4, L + 1), MASK)), "fixed"),
        (dict(fixed=torch.full((4, L), K + 2)), "fixed"),
        (dict(device="meta"), "noise"),
        (dict(vocab_size=K + 1, mask_id=K + 1), "vocab_size"),
        (dict(mask_id=1), "mask_id"),
        (dict(temperature=0.0), "temperature"),
        (dict(batch_size=0), "batch_size"),
    ]
    for overrides, message in cases:
        kwargs = {"num_steps": 4, "noise": noise, "mask_id": MASK, "vocab_size": K, **overrides}
        with pytest.raises(ValueError, match=message):
            noise_shared_sample(counting, schedule, **kwargs)
    visible_at_start = noise.reveal.clone()
    visible_at_start[0, 0] = float(schedule.alpha(1.0)) / 2
    with pytest.raises(ValueError, match="noise.reveal"):
        noise_shared_sample(counting, schedule, num_steps=4, noise=ShadowNoise(visible_at_start, noise.category, "uniform", K), mask_id=MASK, vocab_size=K)
    assert not calls


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r, c: (r, c.float()), "category"),
        (lambda r, c: (r, c[:, :2]), "shape"),
        (lambda r, c: (r, torch.where(c > 0.5, 1.0, c)), "category"),
        (lambda r, c: (r, torch.where(c > 0.5, 0.0, c)), "category"),
        (lambda r, c: (r.clone().fill_(float("nan")), c), "reveal"),
        (lambda r, c: (r[0], c[0]), "reveal"),
    ],
)
def test_shadow_noise_validates_its_parts(change, message: str) -> None:
    noise = sample_shadow_noise(3, L, LogLinearSchedule(), K, MASK, torch.Generator().manual_seed(0))
    reveal, category = change(noise.reveal, noise.category)
    with pytest.raises(ValueError, match=message):
        ShadowNoise(reveal, category, "uniform", K)
    with pytest.raises(ValueError, match="method"):
        ShadowNoise(noise.reveal, noise.category, "gaussian", K)
    with pytest.raises(ValueError, match="num_samples"):
        sample_shadow_noise(0, L, LogLinearSchedule(), K, MASK)


# ------------------------------------------------------------------------- the verify claim


def _claim_context(label: str):
    from proofs_checks.registry import Context

    # the suite's per-claim false-fail budget; mutant runs use the suite's mutant scale (0.5 of --quick)
    return Context(seed=3, device=torch.device("cpu"), quick=True, delta=1e-7, scale=0.5, label=label)


def test_shadow_claim_passes_on_the_sampler_and_catches_its_mutant() -> None:
    """The claim (false-fail rate 1e-7 here) passes with the real sampler, and the planted bug "one
    category noise per sequence" fails it in every configuration."""
    from proofs_checks.registry import run_claim, run_mutant
    from proofs_checks.claims.shadow import shadow_claim, shadow_mutants

    claim = shadow_claim(12)
    report = run_claim(claim, _claim_context("shadow"))
    assert report.error is None and report.passed, [t.name for t in report.tests if not t.passed]
    assert report.false_fail_rate <= 1e-7 * (1 + 1e-9) and report.draws > 0
    assert report.checked["shadow_sample_fn"] == "sampler.shadow.noise.noise_shared_sample"
    (mutant,) = shadow_mutants(12)
    caught = run_mutant(mutant, claim, _claim_context("shadow-mutant"))
    assert caught.error is None and caught.caught
    assert len(caught.failed_tests) == len(report.tests)
