"""The evaluator's front door (sampler.quality.gen_perplexity): names checked before any work or network access, the
dtype keyword transformers expects, and one clear way to fetch SmolLM2 (a line printed, a clear error offline)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from sampler.quality import gen_perplexity as evaluator
from sampler.run import eval as evaluate
from sampler.cli import main
from teacher_fixtures import make_teacher


def _no_network(*args, **kwargs):
    raise AssertionError(f"the network was tried: {args}")


def test_unknown_evaluator_is_refused_by_name_before_any_work(tmp_path, monkeypatch, capsys):
    run = make_teacher(tmp_path / "teacher")
    monkeypatch.setattr(subprocess, "run", _no_network)
    monkeypatch.setattr(evaluate, "_costed", _no_network)  # no sampling either
    monkeypatch.setattr(evaluate, "validation_elbo_per_sequence", _no_network)
    code = main(["eval", "--ckpt", str(run), "--evaluator", "bogus-model", "--device", "cpu", "--num", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "--evaluator" in err and "bogus-model" in err
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0")
    assert main(["eval", "--ckpt", str(run), "--evaluator", str(not_gguf), "--device", "cpu"]) == 2
    assert "not .gguf" in capsys.readouterr().err


def test_evaluator_names_accepted(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for name in ("smollm2", str(gguf), str(tmp_path)):
        assert evaluator.check_evaluator_name(name) == name
    for bad in ("", "gpt2", str(tmp_path / "missing.gguf"), None):
        with pytest.raises(ValueError, match="--evaluator"):
            evaluator.check_evaluator_name(bad)


@pytest.mark.parametrize("version, keyword", [
    ("4.40.2", "torch_dtype"), ("4.55.4", "torch_dtype"), ("4.56.0", "dtype"), ("4.57.1", "dtype"), ("5.0.0", "dtype"),
    ("4.56.0.dev0", "dtype"), ("3.5.1", "torch_dtype"),
])
def test_dtype_keyword_follows_the_transformers_version(version, keyword):
    assert evaluator.dtype_keyword(version) == keyword


@pytest.mark.parametrize("version, keyword, absent", [("4.57.1", "dtype", "torch_dtype"), ("4.45.0", "torch_dtype", "dtype")])
def test_evaluator_passes_the_dtype_keyword_of_the_installed_transformers(tmp_path, monkeypatch, version, keyword, absent):
    """A stand-in transformers module records what from_pretrained receives (no weights are loaded)."""
    received: dict = {}

    class Model(torch.nn.Module):
        @classmethod
        def from_pretrained(cls, source, **kwargs):
            received.update(kwargs, source=source)
            return cls()

    class Tokenizer:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, None

        @classmethod
        def from_pretrained(cls, source, **kwargs):
            return cls()

    fake = types.ModuleType("transformers")
    fake.__version__ = version
    fake.AutoModelForCausalLM, fake.AutoTokenizer = Model, Tokenizer
    monkeypatch.setitem(sys.modules, "transformers", fake)
    scorer = evaluator.CausalLMEvaluator(str(tmp_path))
    assert received[keyword] is torch.float32 and absent not in received
    assert received["source"] == str(tmp_path) and scorer.bos_id == 1


def test_smollm2_fetch_prints_one_line_and_fails_clearly_offline(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(cache))
    monkeypatch.setattr(evaluator, "_installed_gguf", lambda distribution: None)
    monkeypatch.setattr(subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr="network is unreachable"))
    with pytest.raises(evaluator.EvaluatorUnavailableError) as caught:
        evaluator.locate_smollm2_gguf()
    message = str(caught.value)
    assert "mcd fetch smollm2" in message and str(cache / "evaluators" / "smollm2") in message and "offline" in message
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("fetching the SmolLM2-135M evaluator")
    assert main(["fetch", "smollm2"]) == 2
    assert "mcd fetch smollm2" in capsys.readouterr().err


def test_smollm2_cached_gguf_is_found_without_fetching(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path))
    monkeypatch.setattr(evaluator, "_installed_gguf", lambda distribution: None)
    monkeypatch.setattr(subprocess, "run", _no_network)
    cached = tmp_path / "evaluators" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"GGUF")
    assert evaluator.locate_smollm2_gguf() == cached
    assert main(["fetch", "smollm2"]) == 0
    assert str(cached) in capsys.readouterr().out
