"""Ancestral samplers: caching, conditioning, step-count behaviour, correctness on analytic denoisers, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.sampling import ancestral_sample, ancestral_step, time_grid
from theory import CosineSchedule, LogLinearSchedule
from teacher_fixtures import strict_json_loads

K, L = 7, 10
MASK = K


def random_model(time_conditioning: bool = False) -> TransformerDenoiser:
    torch.manual_seed(1)
    cfg = DenoiserConfig(vocab_size=K, seq_len=L, d_model=32, n_layers=2, n_heads=2, time_conditioning=time_conditioning)
    model = TransformerDenoiser(cfg).eval()
    with torch.no_grad():  # sharpen the random init so the outputs depend visibly on the context
        model.head.weight.mul_(40.0)
    return model


def factorised_denoiser(probs: torch.Tensor):
    """p(x0_l | z_t) = probs for every masked position, independent of everything (SUBS on visible ones)."""

    def denoiser(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = probs.log().float().expand(*z.shape, probs.shape[0]).clone()
        visible = z != MASK
        copied = torch.full_like(out, float("-inf"))
        copied.scatter_(-1, torch.where(visible, z, 0).unsqueeze(-1), 0.0)
        return torch.where(visible.unsqueeze(-1), copied, out)

    return denoiser


def copy_denoiser(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact denoiser of the source "one uniformly random token repeated L times": a masked
    position copies any visible token, else is uniform."""
    visible = z != MASK
    first = torch.where(visible, z, K).min(dim=-1).values  # some visible token, K when none
    out = torch.full((*z.shape, K), float("-inf"))
    none = first == K
    out[none] = -math.log(K)
    rows = (~none).nonzero().squeeze(-1)
    out[rows, :, first[rows]] = 0.0
    return out


def test_time_grid() -> None:
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="num_steps"):
        time_grid(0)


@pytest.mark.parametrize("schedule", [LogLinearSchedule(), CosineSchedule()])
def test_cached_sampler_equals_uncached(schedule) -> None:
    model = random_model()
    runs = [
        ancestral_sample(model, schedule, num_steps=40, num_samples=6, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(3), cached=cached, batch_size=4)
        for cached in (False, True)
    ]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].min() >= 0 and runs[0].max() < K  # nothing left masked
    other_seed = ancestral_sample(model, schedule, num_steps=40, num_samples=6, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(4), batch_size=4)
    assert not torch.equal(runs[0], other_seed)


def test_cache_skips_network_calls() -> None:
    """With many more steps than tokens, most steps change no token: the cached sampler calls the
    network on far fewer rows."""
    model = random_model()
    rows = {"cached": 0, "plain": 0}

    def counting(key):
        def denoiser(z, t):
            rows[key] += z.shape[0]
            return model(z, t)
        return denoiser

    for key, cached in (("plain", False), ("cached", True)):
        ancestral_sample(counting(key), LogLinearSchedule(), num_steps=200, num_samples=4, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(0), cached=cached)
    assert rows["cached"] <= 4 * (L + 1) < rows["plain"]


def test_cache_refused_with_time_conditioning() -> None:
    model = random_model(time_conditioning=True)
    with pytest.raises(ValueError, match="time conditioning"):
        ancestral_sample(model, LogLinearSchedule(), num_steps=4, num_samples=2, seq_len=L, mask_id=MASK, vocab_size=K, cached=True)


def test_infilling_keeps_fixed_tokens_and_prefix_conditions() -> None:
    model = random_model()
    gen = torch.Generator().manual_seed(0)
    fixed = torch.full((5, L), MASK)
    fixed[:, 0], fixed[:, 4], fixed[:, L - 1] = 2, 6, 0
    fixed[3, 5] = 1
    out = ancestral_sample(model, LogLinearSchedule(), num_steps=8, num_samples=5, seq_len=L, mask_id=MASK, vocab_size=K, generator=gen, fixed=fixed, cached=True)
    pinned = fixed != MASK
    assert torch.equal(out[pinned], fixed[pinned])
    assert (out >= 0).all() and (out < K).all()
    # a prefix with the copy source fills every other position with the prefix token
    prefix = torch.full((3, L), MASK)
    prefix[:, 0] = torch.tensor([1, 4, 6])
    out = ancestral_sample(copy_denoiser, LogLinearSchedule(), num_steps=4, num_samples=3, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(0), fixed=prefix)
    assert torch.equal(out, prefix[:, :1].expand(3, L))


MARGINAL_P = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02], dtype=torch.float64)


def marginal_error_in_se(temperature: float) -> float:
    """The check behind test_marginals_of_a_factorised_denoiser: 400 sequences of length L sampled in 5
    steps from the factorised denoiser of MARGINAL_P at `temperature`; the largest |freq − target| / SE over
    the K tokens, target = p^{1/T}/Σ p^{1/T} (inf if a token is left masked).  The test passes below 5."""
    p = MARGINAL_P
    out = ancestral_sample(factorised_denoiser(p), LogLinearSchedule(), num_steps=5, num_samples=400, seq_len=L, mask_id=MASK, vocab_size=K,
                           generator=torch.Generator().manual_seed(11), temperature=temperature)
    if bool((out == MASK).any()):
        return math.inf
    target = p ** (1 / temperature)
    target = target / target.sum()
    freq = torch.bincount(out.reshape(-1), minlength=K).double() / out.numel()
    se = (target * (1 - target) / out.numel()).sqrt()
    return float(((freq - target).abs() / se).max())


def test_marginals_of_a_factorised_denoiser() -> None:
    """Sampled token frequencies match p (each within 5 SE; false-fail rate < 1e-5 over 7 tokens),
    and temperature T gives p^{1/T}/Σ p^{1/T}."""
    for temperature in (1.0, 0.5):
        assert marginal_error_in_se(temperature) < 5, temperature


def _temperature_inverted(posterior_step):
    """Planted bug: temperature applied as exp(T·log p) instead of exp(log p / T)."""
    def buggy(*args, temperature=1.0, **kwargs):
        return posterior_step(*args, temperature=1.0 / temperature if temperature > 0 else temperature, **kwargs)
    return buggy


def _temperature_ignored(posterior_step):
    """Planted bug: the sampler drops the temperature (always T = 1 unless greedy)."""
    def buggy(*args, temperature=1.0, **kwargs):
        return posterior_step(*args, temperature=1.0 if temperature > 0 else temperature, **kwargs)
    return buggy


def _last_token_never_drawn(posterior_step):
    """Planted bug: the categorical draw loses the last category (its mass goes to the others)."""
    def buggy(x0_probs, *args, **kwargs):
        x0_probs = x0_probs.clone()
        x0_probs[..., -1] = float("-inf")
        return posterior_step(x0_probs, *args, **kwargs)
    return buggy


@pytest.mark.parametrize("bug, temperature", [(_temperature_inverted, 0.5), (_temperature_ignored, 0.5), (_last_token_never_drawn, 1.0)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_marginal_check_catches_planted_bugs(monkeypatch, bug, temperature) -> None:
    """The 5-SE check at the test's size (4 000 tokens) rejects each planted bug in the sampler's posterior
    step: observed largest error ≈ 107 SE (inverted), 35 SE (ignored), 9 SE (last token, p = 0.02, never
    drawn).  Not shown: a 2 % relative perturbation of p (≈ 1 SE for p = 0.4 at 4 000 tokens)."""
    import sampler.sampling as sampling_module

    monkeypatch.setattr(sampling_module, "posterior_step", bug(sampling_module.posterior_step))
    error = marginal_error_in_se(temperature)
    assert error >= 5, error


def test_final_greedy_and_single_step() -> None:
    p = torch.tensor([0.1, 0.5, 0.1, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    out = ancestral_sample(factorised_denoiser(p), LogLinearSchedule(), num_steps=1, num_samples=20, seq_len=L, mask_id=MASK, vocab_size=K,
                           generator=torch.Generator().manual_seed(0), final_greedy=True)
    assert (out == 1).all()
    z = torch.full((2, L), MASK)
    z_s = ancestral_step(factorised_denoiser(p), z, 1.0, 0.0, LogLinearSchedule(), MASK, torch.Generator().manual_seed(0))
    assert (z_s != MASK).all()


def test_more_steps_give_more_coherent_samples() -> None:
    """On the repeated-token source, N steps keep a sequence consistent unless two tokens are
    revealed in the same step while nothing was visible: few steps mix, many steps do not."""
    def coherent_fraction(num_steps: int) -> float:
        out = ancestral_sample(copy_denoiser, LogLinearSchedule(), num_steps=num_steps, num_samples=300, seq_len=L, mask_id=MASK, vocab_size=K, generator=torch.Generator().manual_seed(5))
        return float((out == out[:, :1]).all(dim=-1).double().mean())

    one, few, many = coherent_fraction(1), coherent_fraction(4), coherent_fraction(256)
    assert one < 0.01  # all L tokens independent: P(coherent) = K^−(L−1)
    assert one < few < many
    assert many > 0.9


def test_sampler_bad_input() -> None:
    model = random_model()
    schedule = LogLinearSchedule()
    with pytest.raises(ValueError, match="num_steps"):
        ancestral_sample(model, schedule, num_steps=0, num_samples=2, seq_len=L, mask_id=MASK, vocab_size=K)
    with pytest.raises(ValueError, match="temperature"):
        ancestral_sample(model, schedule, num_steps=4, num_samples=2, seq_len=L, mask_id=MASK, vocab_size=K, temperature=0.0)
    with pytest.raises(ValueError, match="mask_id"):
        ancestral_sample(model, schedule, num_steps=4, num_samples=2, seq_len=L, mask_id=3, vocab_size=K)
    with pytest.raises(ValueError, match="fixed"):
        ancestral_sample(model, schedule, num_steps=4, num_samples=2, seq_len=L, mask_id=MASK, vocab_size=K, fixed=torch.full((2, L), K + 3))
    with pytest.raises(ValueError, match="seq_len"):
        ancestral_sample(model, schedule, num_steps=4, num_samples=2, seq_len=L + 1, mask_id=MASK, vocab_size=K)
    with pytest.raises(ValueError, match="s < t"):
        ancestral_step(model, torch.full((1, L), MASK), 0.2, 0.5, schedule, MASK)


# --- `mcd sample` ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sampler.data import get_source
    from sampler.train import TrainConfig, train

    run = tmp_path_factory.mktemp("sample") / "run"
    source = get_source("exact", seed=0, seq_len=12, vocab_size=16)
    train(TrainConfig(out=str(run), seq_len=12, max_steps=3, batch_size=8, progress=False, device="cpu",
                      data_seed=0), source=source)
    # the checkpoint records the source spec; rebuild it with vocab 16 for decoding
    return run


def test_cli_sample_writes_jsonl(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    from sampler.cli import main

    out = trained_run / "s.jsonl"
    assert main(["sample", "--ckpt", str(trained_run), "--steps", "5", "--num", "3", "--prefix-ids", "1,2",
                 "--out", str(out), "--seed", "1", "--device", "cpu"]) == 0
    records = [strict_json_loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["ids"][:2] == [1, 2] and len(r["ids"]) == 12 for r in records)
    assert all(isinstance(r["text"], str) for r in records)
    assert "tokens/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps"),
        (["--seq-len", "13"], "seq_len"),
        (["--prefix-ids", "1,99"], "prefix"),
        (["--prefix-ids", "1 " * 13], "prefix"),
        (["--temperature", "0"], "temperature"),
    ],
)
def test_cli_sample_bad_input(trained_run: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    from sampler.cli import main

    assert main(["sample", "--ckpt", str(trained_run), "--num", "1", "--device", "cpu", "--out", str(trained_run / "x.jsonl"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (trained_run / "x.jsonl").exists()


def test_cli_sample_missing_or_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sampler.cli import main

    assert main(["sample", "--ckpt", str(tmp_path / "nothing"), "--num", "1"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\x00" * 64)
    assert main(["sample", "--ckpt", str(tmp_path), "--num", "1"]) == 2
    assert "corrupt" in capsys.readouterr().err
