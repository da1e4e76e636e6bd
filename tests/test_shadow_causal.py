"""The causal shadow student (ShadowConfig(head="causal")) and the sequential importance bound on its
noise-shared sampler's law (sampler.shadow.recall): the base's hidden states, exactness at init,
causality of the head, the quantile interval, the bound against the reveal-pattern bound and against the
sampler's empirical law, wiring into two_axis_metrics / mcd eval / distill, and bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from scipy import stats

from sampler.checkpoint import load_checkpoint
from sampler.data import get_source
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.quality.recall import bound_from_log_weights, pattern_log_likelihoods, recall_per_sequence
from sampler.shadow.recall import shadow_log_weights, shadow_recall_per_sequence, shadow_recall_unavailable
from sampler.quality.two_axis import two_axis_metrics
from sampler.sampling import time_grid
from sampler.shadow.noise import (
    ShadowNoise,
    noise_shared_sample,
    quantile_interval,
    sample_shadow_noise,
    shadow_coupling,
    sorted_quantile_draw,
)
from sampler.shadow.student import ShadowConfig, ShadowStudent, load_shadow_student, shadow_student_from_teacher
from sampler.train.config import DistillConfig
from sampler.train.distill import distill
from teacher_fixtures import make_teacher
from theory import LogLinearSchedule

K, L = 8, 10
MASK = K
SCHEDULE = LogLinearSchedule()


def _base(vocab: int = K, length: int = L, seed: int = 0, logit_scale: float = 1.0) -> TransformerDenoiser:
    torch.manual_seed(seed)
    base = TransformerDenoiser(DenoiserConfig(vocab_size=vocab, seq_len=length, d_model=16, n_layers=1, n_heads=2))
    with torch.no_grad():
        base.head.weight.mul_(logit_scale)
    return base.eval()


def _causal(base: TransformerDenoiser, draft: bool = True, head_std: float | None = None, zero_out: bool = False,
            seed: int = 3, out_std: float | None = None, width: int = 64) -> ShadowStudent:
    """A causal student on `base`; head_std: every head parameter redrawn N(0, head_std²) (a noise-reading head;
    out_std: its output projection's instead); zero_out: then its output projection zeroed (the head adds nothing)."""
    shadow = ShadowConfig(head="causal", draft=draft, causal_width=width, causal_heads=min(4, width // 8))
    student = shadow_student_from_teacher(base.state_dict(), base.config, shadow, SCHEDULE)
    if head_std is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in student.causal.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * head_std)
            if out_std is not None:
                student.causal.out.weight.copy_(torch.randn(student.causal.out.weight.shape, generator=generator) * out_std)
            if zero_out:
                student.causal.out.weight.zero_()
                student.causal.out.bias.zero_()
    return student.eval()


def _noise(n: int, length: int = L, vocab: int = K, seed: int = 1) -> ShadowNoise:
    return sample_shadow_noise(n, length, SCHEDULE, vocab, vocab, torch.Generator().manual_seed(seed))


def _with_category(noise: ShadowNoise, category: torch.Tensor) -> ShadowNoise:
    return ShadowNoise(noise.reveal, category, noise.method, noise.vocab_size)


# --------------------------------------------------------------------------- the model


def test_forward_is_readout_of_hidden() -> None:
    """TransformerDenoiser.forward = readout(hidden(z, t), z) exactly; readout = SUBS of head(ln_f(h))."""
    base = _base()
    z = torch.where(torch.rand(4, L, generator=torch.Generator().manual_seed(0)) < 0.5, MASK, 2)
    t = torch.linspace(0.1, 1.0, 4)
    hidden = base.hidden(z, t)
    assert hidden.shape == (4, L, 16)
    assert torch.equal(base(z, t), base.readout(hidden, z))
    masked = z == MASK
    assert torch.equal(base(z, t)[masked], torch.log_softmax(base.logits(hidden), -1)[masked])


@pytest.mark.parametrize("draft", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_fresh_causal_student_is_its_base(draft: bool, training: bool) -> None:
    """The zero-initialised output projection makes a fresh causal student equal its base exactly, whatever the
    noise (planted bug caught: the output projection left at its random init)."""
    base = _base()
    student = _causal(base, draft).train(training)
    z = torch.where(torch.rand(6, L, generator=torch.Generator().manual_seed(2)) < 0.6, MASK, 1)
    t = torch.linspace(0.2, 1.0, 6)
    for seed in (1, 2):
        assert torch.equal(student(z, t, noise=_noise(6, seed=seed)), base(z, t))


def test_causal_head_reads_only_the_noise_of_earlier_revealed_tokens() -> None:
    """With a random non-zero head: p_l is unchanged (exactly) when c_l changes, or c_m for any m with
    τ_m < τ_l (or m visible); it changes when c_j changes for any masked j with τ_j > τ_l.
    Planted bugs caught: the mask built with >= (l reads its own c) and with < (reversed order)."""
    base = _base()
    student = _causal(base, head_std=0.5)
    z = torch.full((1, L), MASK)
    z[0, [2, 7]] = torch.tensor([3, 5])
    t = torch.tensor([0.9])
    noise = _noise(1, seed=5)
    tau = student.reveal_times(noise)[0]
    masked = (z == MASK)[0]
    reference = student(z, t, noise=noise)[0]
    for m in range(L):
        category = noise.category.clone()
        category[0, m] = (category[0, m] + 0.37) % 1.0
        moved = student(z, t, noise=_with_category(noise, category))[0]
        for l in masked.nonzero().squeeze(-1).tolist():
            if masked[m] and tau[m] > tau[l]:
                assert (moved[l] - reference[l]).abs().max() > 1e-5, (l, m)
            else:
                assert torch.equal(moved[l], reference[l]), (l, m)
    assert int((masked.unsqueeze(0) & (tau.unsqueeze(0) > tau.unsqueeze(1)))[masked].sum()) > 10  # many pairs tested


# --------------------------------------------------------------------------- the quantile interval


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_quantile_interval_is_where_the_draw_gives_the_token(temperature: float) -> None:
    """Draws at c inside [low, low + width) give x, just outside do not; the intervals of all K tokens tile
    [0, 1) (ties included: equal weights ordered by id)."""
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(64, 7, generator=generator) * 2, -1)
    log_probs[:, 4] = log_probs[:, 1]  # ties
    tokens = torch.randint(0, 7, (64,), generator=generator)
    low, width = quantile_interval(log_probs, tokens, temperature)
    assert low.dtype == torch.float64 and bool((width > 0).all())
    for fraction in (1e-6, 0.3, 0.5, 0.999999):
        assert torch.equal(sorted_quantile_draw(log_probs, low + fraction * width, temperature), tokens)
    below, above = low - 1e-9, low + width + 1e-9
    inner_low, inner_high = low > 1e-6, above < 1 - 1e-6
    assert bool(inner_low.sum() > 10) and bool(inner_high.sum() > 10)
    assert bool((sorted_quantile_draw(log_probs[inner_low], below[inner_low], temperature) != tokens[inner_low]).all())
    assert bool((sorted_quantile_draw(log_probs[inner_high], above[inner_high], temperature) != tokens[inner_high]).all())
    every = torch.arange(7).repeat(64)
    all_low, all_width = quantile_interval(log_probs.repeat_interleave(7, 0), every, temperature)
    assert torch.allclose(all_width.reshape(64, 7).sum(-1), torch.ones(64, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(all_low.reshape(64, 7).min(-1).values, torch.zeros(64, dtype=torch.float64), atol=0)


def test_quantile_interval_refuses_bad_tokens() -> None:
    with pytest.raises(ValueError, match="tokens must hold one id"):
        quantile_interval(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="tokens must hold one id"):
        quantile_interval(torch.zeros(2, 3), torch.tensor([0]))


# --------------------------------------------------------------------------- the sequential importance bound


def _reveal_steps(reveal: torch.Tensor, steps: int) -> torch.Tensor:
    """Each token's reveal step from its reveal noise: the number of grid times t_1..t_N at which it is masked."""
    coupling = shadow_coupling(SCHEDULE, K, MASK, "uniform")
    grid = time_grid(steps).tolist()[1:]
    return sum((~coupling.visible(reveal, s)).long() for s in grid)


@pytest.mark.parametrize("steps,temperature", [(4, 1.0), (3, 0.7)])
def test_bound_with_a_noise_ignoring_head_is_the_reveal_pattern_bound(steps: int, temperature: float) -> None:
    """A causal student whose head adds nothing (random head, zero output projection): every log w equals the
    log-likelihood of x under the base on the reveal pattern its u gives (sampler.quality.recall), to float
    tolerance, and the bound is the same function of them."""
    base = _base(logit_scale=3.0)
    student = _causal(base, head_std=0.5, zero_out=True)
    x = torch.randint(0, K, (6, L), generator=torch.Generator().manual_seed(4))
    reveal = _noise(3 * 6, seed=9).reveal.reshape(3, 6, L)
    log_w = shadow_log_weights(student, SCHEDULE, x, reveal, steps=steps, temperature=temperature,
                               generator=torch.Generator().manual_seed(0))
    times = time_grid(steps).tolist()[:-1]
    expected = pattern_log_likelihoods(base, x, _reveal_steps(reveal, steps), times, [temperature], MASK)[0]
    assert torch.allclose(log_w, expected, atol=1e-4, rtol=0)
    assert float((log_w - expected).abs().max()) < 1e-4 and float(expected.abs().min()) > 1.0
    assert torch.allclose(bound_from_log_weights(log_w, L), bound_from_log_weights(expected, L), atol=1e-5)


def _strong_causal_head(base: TransformerDenoiser) -> ShadowStudent:
    """A causal student whose conditionals move strongly with the earlier tokens' category noise: a random head
    (N(0, 1) parameters) whose keys read only φ(c) (and drafts), with uniform attention (zero queries), amplified
    attention output and a dominant output projection."""
    student = _causal(base, head_std=1.0, seed=7, out_std=30.0, width=16)
    d_model, scalar = base.config.d_model, 2 * student.shadow.fourier_features + 1
    with torch.no_grad():
        student.causal.key_in.weight[:, :d_model] = 0
        student.causal.key_in.weight[:, d_model + scalar:] = 0
        student.causal.key_in.weight.mul_(10)
        for layer in student.causal.layers:
            layer.query.weight.zero_()
            layer.query.bias.zero_()
            layer.proj.weight.mul_(10)
    return student


def _law_and_estimate(student: ShadowStudent, steps: int, temperature: float, draws: int, samples: int):
    """(empirical law of the noise-shared sampler over the 27 sequences, SIS estimate of q(x), its SE)."""
    outcomes = torch.tensor(list(itertools.product(range(3), repeat=3)))
    noise = sample_shadow_noise(samples, 3, SCHEDULE, 3, 3, torch.Generator().manual_seed(11))
    drawn = noise_shared_sample(student, SCHEDULE, num_steps=steps, noise=noise, mask_id=3, vocab_size=3, temperature=temperature, batch_size=4096)
    counts = torch.bincount(drawn[:, 0] * 9 + drawn[:, 1] * 3 + drawn[:, 2], minlength=27).double()
    reveal = sample_shadow_noise(draws * 27, 3, SCHEDULE, 3, 3, torch.Generator().manual_seed(12)).reveal
    log_w = shadow_log_weights(student, SCHEDULE, outcomes, reveal.reshape(draws, 27, 3), steps=steps,
                               temperature=temperature, generator=torch.Generator().manual_seed(13), batch_size=4096)
    weights = log_w.exp()
    return counts / samples, weights.mean(0), weights.std(0) / draws ** 0.5


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
@pytest.mark.parametrize("steps,temperature", [(1, 1.0), (2, 1.0), (2, 0.7)])
def test_importance_weights_are_unbiased_for_the_samplers_law(steps: int, temperature: float) -> None:
    """K = 3, L = 3, random base and a random non-zero causal head that reads the noise strongly: the mean of w
    over 2 000 (u, c) draws estimates q_N(x) for each of the 27 sequences; against the noise-shared sampler's
    empirical law over 30 000 draws (cells expected below 10 counts pooled into one), each cell's
    z = (empirical − estimate)/SE is within ±4.5 and Σ z² below the chi-square quantile at 1 − 1e-4.
    False-fail rate (normal approximation): below 28·6.8e-6 + 1e-4 < 3e-4 per case.
    Planted bugs caught: c drawn uniform on [0, 1] instead of in I_l (Σ z² 345 and 121 at N = 1, 2); tokens
    walked in τ-ascending order."""
    samples = 30_000
    base = _base(vocab=3, length=3, seed=1, logit_scale=30.0)
    student = _strong_causal_head(base)
    z, noise = torch.full((64, 3), 3), _noise(64, length=3, vocab=3, seed=3)
    with torch.no_grad():
        moved = student(z, torch.ones(64), noise=_with_category(noise, 1 - noise.category))
        assert float((moved - student(z, torch.ones(64), noise=noise)).abs().amax(-1).mean()) > 0.3  # the head matters
    empirical, estimate, se = _law_and_estimate(student, steps, temperature, draws=2000, samples=samples)
    assert float(estimate.sum()) == pytest.approx(1.0, abs=0.02)
    common = estimate * samples >= 10
    pooled = lambda v: torch.cat((v[common], v[~common].sum().reshape(1)))  # noqa: E731
    se_pooled = torch.cat((se[common], (se[~common] ** 2).sum().sqrt().reshape(1)))
    empirical, estimate = pooled(empirical), pooled(estimate)
    scores = (empirical - estimate) / (estimate * (1 - estimate) / samples + se_pooled ** 2).sqrt()
    assert int(common.sum()) >= 6
    assert float(scores.abs().max()) < 4.5, scores
    assert float((scores ** 2).sum()) < stats.chi2.ppf(1 - 1e-4, len(scores)), scores


def test_recall_per_sequence_is_the_bound_and_pairs_temperatures() -> None:
    """shadow_recall_per_sequence = −logmeanexp_k(log w)/L per temperature, the k reveal noises shared."""
    student = _causal(_base(), head_std=0.5)
    x = torch.randint(0, K, (5, L), generator=torch.Generator().manual_seed(2))
    got = shadow_recall_per_sequence(student, SCHEDULE, x, steps=3, temperatures=(1.0, 0.8), k=2,
                                     generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    reveal = sample_shadow_noise(10, L, SCHEDULE, K, MASK, generator).reveal.reshape(2, 5, L)
    for index, temperature in enumerate((1.0, 0.8)):
        log_w = shadow_log_weights(student, SCHEDULE, x, reveal, steps=3, temperature=temperature, generator=generator)
        assert torch.allclose(got[index], bound_from_log_weights(log_w, L), atol=1e-12)
    assert got.shape == (2, 5) and bool(torch.isfinite(got).all())


# --------------------------------------------------------------------------- wiring and bad input


def test_recall_refused_or_unavailable_where_the_bound_does_not_apply() -> None:
    """Input head, design B's argmax draw, an ablation: ValueError naming the reason before any work, and
    two_axis_metrics marks recall unavailable with that reason; a causal student gets its bound there."""
    source = get_source("exact", seed=0, seq_len=L)
    base = _base(vocab=source.vocab_size)
    samples = source.sample_batch(8, L, torch.Generator().manual_seed(0))
    input_head = shadow_student_from_teacher(base.state_dict(), base.config, ShadowConfig(), SCHEDULE).eval()
    argmax = _causal(base, head_std=0.5)
    argmax.draw = "argmax"
    for student, reason in ((input_head, "head 'input'"), (argmax, "argmax")):
        with pytest.raises(ValueError, match=reason):
            shadow_recall_per_sequence(student, SCHEDULE, samples, steps=2)
        result = two_axis_metrics(samples, source, denoiser=student, schedule=SCHEDULE, steps=2, ngram_orders=(1,))
        assert result["recall"] is None and reason in result["unavailable"]["recall"]
    ablated = _causal(base, head_std=0.5)
    ablated.ablation = "fresh"
    assert "ablation 'fresh'" in shadow_recall_unavailable(ablated)
    with pytest.raises(ValueError, match="temperatures must be"):
        shadow_recall_per_sequence(_causal(base), SCHEDULE, samples, steps=2, temperatures=())
    causal = _causal(base, head_std=0.5)
    result = two_axis_metrics(samples, source, denoiser=causal, schedule=SCHEDULE, steps=2, ngram_orders=(1,), k=2)
    assert result["recall"]["bound"].startswith("sequential") and result["recall"]["value"] > 0
    plain = recall_per_sequence(base, SCHEDULE, samples, steps=2, k=2, generator=torch.Generator())
    assert plain.shape == (1, 8)  # the plain bound still serves a noise-free denoiser


def test_causal_distill_round_trip_and_eval_reports_recall(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mcd distill --method shadow --shadow-head causal`: the head is recorded in the config and the checkpoint's
    shadow meta, trained (output projection moves), loaded back as a causal student with the EMA weights; `mcd
    eval` on it reports recall; an old-style shadow config (no head key) loads as the input head; --help names it."""
    from sampler.cli import main
    from sampler.run.eval import EvalConfig, evaluate_checkpoint, format_table

    teacher = make_teacher(tmp_path / "teacher", seq_len=12)
    config = DistillConfig(teacher=str(teacher), out=str(tmp_path / "causal"), method="shadow", coupling="uniform",
                           start_steps=4, target_steps=2, steps_per_round=2, shadow_substeps=2, batch_size=4,
                           save_every=2, log_every=1, device="cpu", progress=False, warmup=1, temperature=False,
                           shadow_head="causal")
    assert distill(config)["complete"]
    tensors, meta = load_checkpoint(tmp_path / "causal")
    assert meta["distill"]["config"]["shadow_head"] == "causal" and meta["shadow"]["config"]["head"] == "causal"
    assert tensors["model.causal.out.weight"].abs().sum() > 0
    student, _ = load_shadow_student(tmp_path / "causal")
    assert student.shadow.head == "causal"
    assert torch.equal(student.causal.out.weight, tensors["ema.causal.out.weight"])
    report = evaluate_checkpoint(EvalConfig(ckpt=str(tmp_path / "causal"), steps=[2], num=4, elbo_num=4, device="cpu"))
    recall = report["results"][0]["recall"]
    # the k-series as for any row: up to the default --recall-k 64, stopping from k = 4 on once remaining <= 0.01
    assert recall["k"] in (4, 16, 64) and recall["steps"] == 2 and 0 < recall["value"] < 50
    assert recall["k"] == 64 or recall["remaining"] <= 0.01
    assert recall["estimator"] == "sequential" and recall["remaining"] >= abs(recall["change"])
    assert "recall" in format_table(report)
    assert ShadowConfig.from_dict({"fourier_features": 8, "hidden": 128, "draft": True}).head == "input"
    with pytest.raises(ValueError, match="shadow_head must be one of"):
        DistillConfig(teacher="a", out="b", method="shadow", coupling="uniform", shadow_head="diagonal").validate()
    try:
        main(["distill", "--help"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    assert "--shadow-head" in capsys.readouterr().out


def test_causal_attention_knows_where_the_earlier_tokens_are() -> None:
    """Rotary positions: moving the visible keys to other positions (same features, same visibility) changes the
    output at the query.  Planted bug "no positions in the head" (the attention is then a set function of the
    keys): the outputs would be equal to float precision."""
    from sampler.model import rotary_tables
    from sampler.shadow.causal_head import CausalAttentionLayer

    torch.manual_seed(0)
    layer = CausalAttentionLayer(width=16, heads=2)
    cos, sin = rotary_tables(8, 8, 10_000.0)
    query = torch.randn(1, 8, 16)
    keys = torch.randn(1, 8, 16)
    visible = torch.zeros(1, 8, 8, dtype=torch.bool)
    visible[0, 0, 1] = True  # the query at 0 reads one key: at position 1, then the same key moved to 6
    moved_keys, moved_visible = keys.clone(), torch.zeros_like(visible)
    moved_keys[0, 6] = keys[0, 1]
    moved_visible[0, 0, 6] = True
    near = layer(query, keys, visible, cos, sin)[0, 0]
    far = layer(query, moved_keys, moved_visible, cos, sin)[0, 0]
    assert (near - far).abs().max() > 1e-4
