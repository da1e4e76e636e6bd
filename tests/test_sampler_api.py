"""The public `sampler` API (issue 13): lazy import, load_run / sample, the bring-your-own-denoiser
adapter (ModuleDenoiser, subs_from_logits) and a toy user module through sample, eval and distillation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import sampler
from sampler.adapter import subs_from_logits
from sampler.checkpoint import load_checkpoint, subset
from sampler.data import ExactDenoiser, HiddenMarkovSource
from sampler.sampling import ancestral_sample
from teacher_fixtures import strict_json_loads

K = 32  # the embedded source's vocabulary
L = 12


# --- toy user modules --------------------------------------------------------------------------


class ToyNet(torch.nn.Module):
    """A user's own network: ids (mask id K included) and t in, logits over `classes` out.
    Every position sees every other through a linear mix over positions."""

    def __init__(self, classes: int, vocab_ids: int = K + 1, seq_len: int = L, width: int = 16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_ids, width)
        self.position = torch.nn.Parameter(0.1 * torch.randn(seq_len, width))
        self.mix = torch.nn.Linear(seq_len, seq_len)
        self.time = torch.nn.Linear(1, width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, z, t):
        h = self.embed(z) + self.position[: z.shape[1]] + self.time(t.float()[:, None])[:, None, :]
        h = h + self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.head(torch.tanh(h))


class ExactNet(torch.nn.Module):
    """The source's exact posterior as a user module: its log-probs as logits, optionally followed by
    a mask-class logit (a large one, which SUBS must ignore)."""

    def __init__(self, source: HiddenMarkovSource, mask_logit: float | None = None):
        super().__init__()
        self.exact = ExactDenoiser(source, mask_id=K, dtype=torch.float64)
        self.mask_logit = mask_logit

    def forward(self, z):
        log_p = self.exact(z)
        if self.mask_logit is None:
            return log_p
        return torch.cat((log_p, torch.full_like(log_p[..., :1], self.mask_logit)), dim=-1)


@pytest.fixture(scope="module")
def source():
    return HiddenMarkovSource(seed=0, seq_len=L)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A teacher trained for a few steps through the public API (quality irrelevant here)."""
    out = tmp_path_factory.mktemp("teacher")
    sampler.train_teacher(sampler.TrainConfig(
        out=str(out), seq_len=L, max_steps=4, batch_size=8, warmup=1, save_every=10**6, eval_every=10**6,
        eval_batches=1, log_every=10**6, progress=False, device="cpu"))
    return out


# --- the package --------------------------------------------------------------------------------


def test_import_is_lazy_and_every_public_name_resolves():
    code = ("import sys, sampler; assert 'torch' not in sys.modules, 'import sampler imported torch'; "
            "[getattr(sampler, n) for n in sampler.__all__]; assert 'torch' in sys.modules; print(len(sampler.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(sampler.__all__) >= 20


@pytest.mark.parametrize("name", sampler.__all__)
def test_every_public_name_has_a_docstring_and_an_example(name):
    assert (getattr(sampler, name).__doc__ or "").strip(), f"sampler.{name} has no docstring"
    assert f"sampler.{name}" in sampler.__doc__, f"the package docstring shows no example of sampler.{name}"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        sampler.no_such_name  # noqa: B018


def test_public_names_are_the_library_functions_not_copies():
    from sampler.train.distill import distill
    from sampler.train.teacher import train

    assert sampler.train_teacher is train and sampler.distill_run is distill
    assert sampler.ancestral_sample is ancestral_sample


# --- SUBS from logits ---------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [K, K + 1])
def test_subs_from_logits_matches_a_hand_reference(classes):
    """Masked positions: softmax over the first K logits only (computed here by exp / sum in float64);
    visible positions: one-hot on z.  Catches a mask class left in the normaliser and visible tokens not carried."""
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, L, classes, generator=gen, dtype=torch.float64)
    if classes == K + 1:
        logits[..., K] = 5.0  # a mask class that would take most of the mass if it were kept
    z = torch.randint(0, K, (4, L), generator=gen)
    z[torch.rand(4, L, generator=gen) < 0.5] = K
    got = subs_from_logits(logits, z, K, K).exp()
    for b in range(4):
        for pos in range(L):
            if z[b, pos] == K:
                weights = [float(torch.exp(logits[b, pos, k])) for k in range(K)]
                expected = torch.tensor([w / sum(weights) for w in weights], dtype=torch.float64)
            else:
                expected = torch.zeros(K, dtype=torch.float64)
                expected[z[b, pos]] = 1.0
            torch.testing.assert_close(got[b, pos], expected, rtol=1e-12, atol=1e-15)


def test_subs_from_logits_rejects_wrong_class_count_and_mask_id():
    z = torch.full((1, 3), K)
    with pytest.raises(ValueError, match="vocab_size"):
        subs_from_logits(torch.zeros(1, 3, K + 2), z, K, K)
    with pytest.raises(ValueError, match="mask_id"):
        subs_from_logits(torch.zeros(1, 3, K + 1), torch.full((1, 3), K + 5), K, K + 5)


# --- the adapter --------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [K, K + 1])
def test_module_denoiser_is_subs_of_the_module_output(classes):
    torch.manual_seed(0)
    net = ToyNet(classes)
    denoiser = sampler.ModuleDenoiser(net, vocab_size=K, seq_len=L)
    assert isinstance(denoiser, sampler.Denoiser)
    assert (denoiser.config.output_classes, denoiser.mask_id, denoiser.config.time_conditioning) == (classes, K, True)
    gen = torch.Generator().manual_seed(1)
    z = torch.randint(0, K, (5, L), generator=gen)
    z[:, ::3] = K
    t = torch.rand(5, generator=gen)
    log_p = denoiser(z, t)
    assert log_p.shape == (5, L, K)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(5, L))
    torch.testing.assert_close(log_p, subs_from_logits(net(z, t), z, K, K))
    visible = z != K
    assert (log_p[visible].argmax(-1) == z[visible]).all() and (log_p[visible].max(-1).values == 0).all()


@pytest.mark.parametrize("mask_logit", [None, 30.0])
def test_exact_posterior_as_a_user_module_samples_exactly_like_the_exact_denoiser(source, mask_logit):
    """The exact denoiser wrapped as a module with K outputs, or K + 1 with a huge mask logit, returns the
    exact denoiser's log-probs (a mask class kept in the normaliser, 30 nats above the rest, would take
    almost all the mass) and gives the same samples for the same seed as the exact denoiser itself
    (a wrong class dropped would change the draws; the draws renormalise, so only the log-probs see a leak)."""
    schedule = sampler.make_schedule("loglinear")
    module = sampler.ModuleDenoiser(ExactNet(source, mask_logit), vocab_size=K, seq_len=L, takes_time=False)
    assert not module.config.time_conditioning
    z = source.sample_batch(6, L, torch.Generator().manual_seed(2))
    z[torch.rand(6, L, generator=torch.Generator().manual_seed(4)) < 0.6] = K
    torch.testing.assert_close(module(z, torch.rand(6)), ExactDenoiser(source, K, torch.float64)(z), rtol=0, atol=1e-12)
    direct = ancestral_sample(ExactDenoiser(source, K, torch.float64), schedule, num_steps=8, num_samples=16, seq_len=L, mask_id=K, vocab_size=K,
                              generator=torch.Generator().manual_seed(3))
    adapted = sampler.sample(module, schedule, num_samples=16, num_steps=8, seed=3)
    assert torch.equal(adapted, direct)


def _bad(module, **kwargs):
    args = {"vocab_size": K, "seq_len": L, **kwargs}
    return lambda: sampler.ModuleDenoiser(module, **args)


class _Lambda(torch.nn.Module):
    def __init__(self, fn, with_time=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.fn, self.with_time = fn, with_time

    def forward(self, z, *t):
        if self.with_time != bool(t):
            raise TypeError(f"forward() takes {2 if self.with_time else 1} positional arguments")
        return self.fn(z)


@pytest.mark.parametrize("make, argument", [
    (lambda: _bad(_Lambda(lambda z: torch.zeros(*z.shape, K + 2))), "vocab_size"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(*z.shape, K - 1))), "vocab_size"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(z.shape[1], z.shape[0], K))), "shape"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(z.shape[0], K))), "shape"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(*z.shape, K, dtype=torch.long))), "floating-point"),
    (lambda: _bad(_Lambda(lambda z: torch.full((*z.shape, K), float("nan")))), "NaN"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(*z.shape, K + 1)), mask_id=K + 3), "mask_id"),
    (lambda: _bad(ToyNet(K + 1), mask_id=K - 1), "mask_id"),
    (lambda: _bad(ToyNet(K, vocab_ids=K)), "mask_id"),  # no embedding row for the mask id
    (lambda: _bad(ToyNet(K, vocab_ids=20)), "vocab_size"),  # a smaller vocabulary
    (lambda: _bad(ToyNet(K + 1), vocab_size=40), "vocab_size"),  # a larger vocabulary than the module's
    (lambda: _bad(ToyNet(K, seq_len=L - 4)), "seq_len"),
    (lambda: _bad(_Lambda(lambda z: torch.zeros(*z.shape, K), with_time=False)), "takes_time"),
    (lambda: _bad(lambda z, t: torch.zeros(*z.shape, K)), "module"),
])
def test_adapter_mismatch_is_a_value_error_naming_the_argument_at_construction(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()()


def test_adapter_rejects_a_module_whose_output_changes_shape_after_the_probe():
    calls = []

    def fn(z):
        calls.append(1)
        return torch.zeros(*z.shape, K if len(calls) <= 2 else K + 1)

    denoiser = sampler.ModuleDenoiser(_Lambda(fn), vocab_size=K, seq_len=L)
    with pytest.raises(ValueError, match="as on the probe"):
        denoiser(torch.full((2, L), K), torch.ones(2))


# --- load_run and sample ------------------------------------------------------------------------


def test_load_run_and_sample_match_the_sampler_itself(run_dir):
    run = sampler.load_run(run_dir)
    assert (run.kind, run.mask_id, run.vocab_size, run.seq_len, run.step) == ("teacher", K, K, L, 4)
    assert not run.denoiser.training and run.source.vocab_size == K
    expected = ancestral_sample(run.denoiser, run.schedule, num_steps=8, num_samples=6, seq_len=L, mask_id=K, vocab_size=K, generator=torch.Generator().manual_seed(5),
                                temperature=0.8, cached=True)
    got = sampler.sample(run.denoiser, run.schedule, num_samples=6, num_steps=8, seed=5, temperature=0.8)
    assert torch.equal(got, expected)
    assert not torch.equal(got, sampler.sample(run.denoiser, run.schedule, num_samples=6, num_steps=8, seed=6, temperature=0.8))


def test_prefix_and_infill_pin_their_positions(run_dir):
    run = sampler.load_run(run_dir)
    prompted = sampler.sample(run.denoiser, run.schedule, num_samples=5, num_steps=4, seed=0, prefix=[3, 1, 4])
    assert (prompted[:, :3] == torch.tensor([3, 1, 4])).all()
    pattern = torch.full((L,), K)
    pattern[[0, 5, L - 1]] = torch.tensor([7, 8, 9])
    filled = sampler.sample(run.denoiser, run.schedule, num_samples=5, num_steps=4, seed=0, infill=pattern)
    assert (filled[:, [0, 5, L - 1]] == torch.tensor([7, 8, 9])).all() and (filled < K).all()


def test_sample_bad_input_names_the_argument(run_dir, source):
    run = sampler.load_run(run_dir)
    with pytest.raises(ValueError, match="prefix or infill"):
        sampler.sample(run.denoiser, run.schedule, num_samples=2, num_steps=2, prefix=[1], infill=torch.full((L,), K))
    with pytest.raises(ValueError, match="prefix"):
        sampler.sample(run.denoiser, run.schedule, num_samples=2, num_steps=2, prefix=[K])
    with pytest.raises(ValueError, match="vocab_size=40"):
        sampler.sample(run.denoiser, run.schedule, num_samples=2, num_steps=2, vocab_size=40)
    with pytest.raises(ValueError, match="seq_len"):
        sampler.sample(run.denoiser, run.schedule, num_samples=2, num_steps=2, seq_len=L + 1)
    with pytest.raises(ValueError, match="seq_len must be given"):
        sampler.sample(lambda z, t: torch.zeros(*z.shape, K), run.schedule, num_samples=2, num_steps=2, vocab_size=K, mask_id=K)
    with pytest.raises(ValueError, match="no valid|no checkpoint"):
        sampler.load_run(run_dir / "missing")


# --- a toy user module through sample, eval and distillation, public API only --------------------


def test_toy_user_module_through_sample_eval_and_distillation(tmp_path, source):
    torch.manual_seed(0)
    denoiser = sampler.ModuleDenoiser(ToyNet(K + 1), vocab_size=K, seq_len=L)
    schedule = sampler.make_schedule("loglinear")
    hmm = sampler.get_source("exact", seq_len=L)

    samples = sampler.sample(denoiser, schedule, num_samples=32, num_steps=8, seed=0)
    assert samples.shape == (32, L) and int(samples.min()) >= 0 and int(samples.max()) < K
    quality = sampler.sample_quality(samples, hmm)
    assert quality["nll_per_token"] > quality["entropy_rate"]  # an untrained network is far from the source
    x0 = hmm.sample_batch(16, L, torch.Generator().manual_seed(1), split="valid")
    elbo = sampler.validation_elbo_per_sequence(denoiser, schedule, x0, K, K, torch.Generator().manual_seed(2), draws=2)
    true_nll = -hmm.log_prob(x0) / L
    assert elbo.shape == (16,) and float(elbo.mean()) > float(true_nll.mean())  # an upper bound, far from tight here

    config = sampler.DistillConfig(teacher="toy-net", out=str(tmp_path / "student"), start_steps=8, target_steps=4,
                                   steps_per_round=6, batch_size=8, lr=3e-3, warmup=1, log_every=1, progress=False,
                                   device="cpu")
    result = sampler.distill_module(denoiser, schedule, hmm, config)
    assert (result["optimizer_steps"], result["teacher_forward_passes"], result["round_steps"]) == (12, 12, [8, 4])
    assert result["complete"]
    student = result["student"]
    assert isinstance(student, sampler.ModuleDenoiser) and not student.training
    tensors, meta = load_checkpoint(config.out)
    assert meta["kind"] == "distilled-module" and meta["distill"]["complete"]
    for name, value in student.state_dict().items():  # the returned student holds the EMA weights
        torch.testing.assert_close(value, subset(tensors, "ema")[name], rtol=0, atol=0)
    teacher_weights = denoiser.state_dict()
    assert any(not torch.equal(value, teacher_weights[name]) for name, value in student.state_dict().items())
    records = [strict_json_loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    fast = sampler.sample(student, schedule, num_samples=16, num_steps=4, seed=0)
    assert sampler.sample_quality(fast, hmm)["num_samples"] == 16


def test_distill_module_starts_from_the_teacher(tmp_path):
    """max_steps=0: the student checkpointed at step 0 is the teacher itself (not a fresh network)."""
    torch.manual_seed(0)
    denoiser = sampler.ModuleDenoiser(ToyNet(K), vocab_size=K, seq_len=L)
    config = sampler.DistillConfig(teacher="toy", out=str(tmp_path / "s"), start_steps=4, target_steps=4,
                                   steps_per_round=5, max_steps=0, progress=False, device="cpu")
    result = sampler.distill_module(denoiser, sampler.make_schedule(), sampler.get_source("exact", seq_len=L), config)
    assert result["step"] == 0 and not result["complete"]
    tensors, _ = load_checkpoint(config.out)
    for name, value in denoiser.state_dict().items():
        assert torch.equal(subset(tensors, "model")[name], value), name


def test_distill_module_bad_input(tmp_path, source):
    denoiser = sampler.ModuleDenoiser(ToyNet(K), vocab_size=K, seq_len=L)
    config = sampler.DistillConfig(teacher="toy", out=str(tmp_path / "s"), progress=False, device="cpu")
    with pytest.raises(ValueError, match="teacher must be an nn.Module"):
        sampler.distill_module(lambda z, t: z, sampler.make_schedule(), source, config)
    with pytest.raises(ValueError, match="source has vocab_size"):
        sampler.distill_module(denoiser, sampler.make_schedule(), HiddenMarkovSource(vocab_size=16, seq_len=L), config)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "checkpoint.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="does not resume"):
        sampler.distill_module(denoiser, sampler.make_schedule(), source, config)
