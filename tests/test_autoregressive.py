"""The autoregressive reference: a normalised law over sequences, causal predictions, an exact sampler, and
its training run through the shared loop (planted bugs in tests/PLANTED_BUGS.md, AR1-AR4)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from scipy.stats import chisquare

from sampler import autoregressive
from sampler.checkpoint import load_checkpoint
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.train.config import TrainConfig
from sampler.train.teacher import train


def _causal_model(vocab_size: int = 3, seq_len: int = 4, seed: int = 0) -> TransformerDenoiser:
    torch.manual_seed(seed)
    model = TransformerDenoiser(DenoiserConfig(vocab_size=vocab_size, seq_len=seq_len, d_model=16, n_layers=2, n_heads=2,
                                               causal=True))
    for p in model.parameters():  # larger weights than the init, so the law is far from uniform
        p.data.mul_(8.0)
    return model.eval()


def _all_sequences(vocab_size: int, seq_len: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=seq_len)))


def test_the_law_over_all_sequences_sums_to_one():
    """Σ_x p(x) = 1 over all K^L sequences: fails when the input is not shifted (the model would see x_l) or the
    attention is not causal (AR1, AR2)."""
    model = _causal_model()
    x = _all_sequences(3, 4)
    total = torch.exp(-autoregressive.nll_per_sequence(model, x) * 4).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-9)


def test_the_prediction_at_a_position_reads_only_earlier_tokens():
    model = _causal_model(vocab_size=5, seq_len=6)
    x = torch.randint(0, 5, (8, 6), generator=torch.Generator().manual_seed(1))
    for position in range(6):
        changed = x.clone()
        changed[:, position:] = (changed[:, position:] + 1) % 5
        before = autoregressive.token_log_probs(model, x)
        after = autoregressive.token_log_probs(model, changed)
        # log p(x_l | x_<l) at positions before `position` cannot move; at `position` the scored token changed
        torch.testing.assert_close(before[:, :position], after[:, :position], atol=1e-6, rtol=0)


def test_samples_follow_the_models_law():
    """Chi-square of 20 000 draws against exp(−L·nll) over all 27 sequences; false-fail rate 1e-4 (the test's level)."""
    model = _causal_model(vocab_size=3, seq_len=3, seed=2)
    x = _all_sequences(3, 3)
    probs = torch.exp(-autoregressive.nll_per_sequence(model, x) * 3)
    draws = autoregressive.sample(model, num_samples=20_000, seq_len=3, generator=torch.Generator().manual_seed(0))
    codes = draws[:, 0] * 9 + draws[:, 1] * 3 + draws[:, 2]
    observed = torch.bincount(codes, minlength=27).double()
    assert chisquare(observed.numpy(), (probs / probs.sum() * 20_000).numpy()).pvalue > 1e-4


def test_the_training_loss_is_the_exact_nll():
    """The step function's loss on a batch equals the evaluation's −log p(x)/L averaged over it (AR3: an input
    shifted in one and not the other)."""
    model = _causal_model(vocab_size=4, seq_len=5)
    x = torch.randint(0, 4, (16, 5), generator=torch.Generator().manual_seed(3))
    loss = autoregressive.next_token_loss(model, model.mask_id, x)
    assert loss.item() == pytest.approx(autoregressive.nll_per_sequence(model, x).mean().item(), rel=1e-5)


def test_a_bidirectional_model_is_refused():
    torch.manual_seed(0)
    model = TransformerDenoiser(DenoiserConfig(vocab_size=3, seq_len=4, d_model=16, n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="causal=True"):
        autoregressive.nll_per_sequence(model, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.slow  # a long end-to-end or statistical run: `python -m pytest -m "not slow"` skips it
def test_mcd_train_objective_ar_learns_and_records_its_kind(tmp_path):
    """A few hundred steps on the exact source: the held-out exact NLL falls below the uniform law's log K and
    the checkpoint records kind 'ar' and a causal model."""
    out = tmp_path / "ar"
    summary = train(TrainConfig(out=str(out), objective="ar", seq_len=16, max_steps=150, batch_size=16, warmup=10,
                                lr=3e-3, eval_every=10**6, save_every=10**6, log_every=50, progress=False, device="cpu"))
    _, meta = load_checkpoint(out)
    assert meta["kind"] == "ar" and meta["model_config"]["causal"] is True
    assert meta["train_config"]["objective"] == "ar"
    assert summary["eval_elbo"] < 0.9 * torch.log(torch.tensor(32.0)).item()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["event"] == "end"


def test_mcd_train_objective_ar_steps_on_the_next_token_loss(tmp_path):
    """The first logged loss is the next-token loss of the initial weights on the first data batch (AR4: the
    teacher's ELBO step run on the causal model instead)."""
    from sampler.data import get_source

    out = tmp_path / "ar1"
    train(TrainConfig(out=str(out), objective="ar", seq_len=12, max_steps=1, batch_size=8, warmup=1, seed=0,
                      eval_every=10**6, save_every=10**6, log_every=1, progress=False, device="cpu"))
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    torch.manual_seed(0)  # as the run seeds its model (seed + rank)
    config = DenoiserConfig.preset("tiny", 32, 12, causal=True)
    model = TransformerDenoiser(config)
    x0 = get_source("exact", seed=0, seq_len=12).sample_batch(8, 12, torch.Generator().manual_seed(1))  # the data stream
    expected = autoregressive.next_token_loss(model, model.mask_id, x0).item()
    assert first["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("changes, message", [({"objective": "gpt"}, "objective"),
                                              ({"objective": "ar", "time_conditioning": True}, "time_conditioning")])
def test_bad_objectives_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out=str(tmp_path / "x"), **changes).validate()


def test_budget_warning_names_the_steps_that_fit_and_stays_quiet_when_enough_fit():
    from sampler.train.teacher import USEFUL_STEPS, budget_warning

    device = torch.device("cpu")
    assert budget_warning(0.1, 10.0, float("inf"), "tiny", device) is None  # 6 000 steps fit
    message = budget_warning(4.0, 10.0, float("inf"), "small", device)  # 150 steps fit
    assert message is not None and "--size small" in message and "150" in message
    assert budget_warning(4.0, None, float("inf"), "small", device) is None  # no budget: nothing to warn about
    assert budget_warning(60.0 * 10 / (USEFUL_STEPS - 1), 10.0, float("inf"), "tiny", device) is not None


def test_mcd_train_warns_before_a_run_that_cannot_progress(tmp_path, capsys):
    """A model whose measured step time leaves fewer than USEFUL_STEPS in a 0.01-minute budget: the warning is
    printed before training (and the run still trains)."""
    train(TrainConfig(out=str(tmp_path / "w"), seq_len=16, minutes=0.01, batch_size=8, warmup=1, eval_every=10**6,
                      save_every=10**6, log_every=10**6, progress=True, device="cpu"))
    err = capsys.readouterr().err
    assert "warning: --size tiny" in err and "too few for meaningful progress" in err


def test_an_autoregressive_run_opens_as_its_own_kind(tmp_path):
    """open_run picks the 'ar' kind (not the masked 'denoiser' kind, whose ancestral sampler would read a causal
    model as a denoiser); its samples match sampler.autoregressive.sample from the same seed; mcd eval refuses it."""
    from sampler.run.eval import EvalConfig, evaluate_checkpoint
    from sampler.run.open import open_run

    out = tmp_path / "ar"
    train(TrainConfig(out=str(out), objective="ar", seq_len=8, max_steps=2, batch_size=4, warmup=1, eval_every=10**6,
                      save_every=10**6, log_every=10**6, progress=False, device="cpu"))
    run = open_run(out, device="cpu")
    assert run.kind.name == "ar"
    drawn = run.sample(num_samples=5, num_steps=3, seq_len=8, seed=4)
    expected = autoregressive.sample(run.model, num_samples=5, seq_len=8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(drawn, expected)
    with pytest.raises(ValueError, match="autoregressive reference"):
        evaluate_checkpoint(EvalConfig(ckpt=str(out), steps=[4], num=2, evaluator="none", device="cpu"))
