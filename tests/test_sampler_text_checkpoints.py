"""Text checkpoints are self-contained (the tokenizer travels in the checkpoint) and a missing corpus is a clear error.

Contracts:
- a text run stores its tokenizer (meta["tokenizer"]) at training time; `mcd sample` and `mcd eval`
  decode from it after the corpus (and the BPE cache) is gone;
- byte-level BPE decodes a whole sequence at once: a character split across tokens comes back intact;
- offline, a corpus that is not cached is a clear error naming what is missing, the command that
  fetches it and the cache directory (no traceback), and one line is printed before any fetch.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from sampler.cli import main
from sampler.data.text import ByteTokenizer, CharTokenizer
from teacher_fixtures import strict_json_loads

# Multi-byte UTF-8 on purpose: é, ï, — and 日本 are two to three bytes each.
CORPUS = ("the café was naïve — and the cat sat on the mat. 日本 the dog sat on the log. " * 30)


def train_text_run(tmp_path, spec: str, out_name: str = "run"):
    from sampler.train import TrainConfig, train

    out = tmp_path / out_name
    cfg = TrainConfig(out=str(out), data=spec, seq_len=16, max_steps=3, batch_size=4, warmup=1, save_every=10**6,
                      eval_every=10**6, eval_batches=1, log_every=10**6, progress=False, device="cpu")
    train(cfg)
    return out


def sample_records(run, tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    code = main(["sample", "--ckpt", str(run), "--steps", "4", "--num", "3", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    return [strict_json_loads(line) for line in out.read_text().splitlines()], err


@pytest.mark.parametrize("tokenizer", ["byte", "byte256"])
def test_byte_text_run_samples_and_evaluates_without_its_corpus(tmp_path, monkeypatch, capsys, tokenizer):
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = train_text_run(tmp_path, f"text:{corpus}?tokenizer={tokenizer}")
    corpus.rename(tmp_path / "moved.txt")

    records, err = sample_records(run, tmp_path, capsys)
    expected = ByteTokenizer.fit(CORPUS, compact=tokenizer == "byte")  # built here from the text itself
    assert "warning" not in err
    for record in records:
        assert record["text"] == expected.decode(record["ids"])

    report_path = tmp_path / "eval.json"
    code = main(["eval", "--ckpt", str(run), "--steps", "4", "--num", "4", "--evaluator", "none", "--device", "cpu",
                 "--out", str(report_path), "--data", f"text:{corpus}?tokenizer={tokenizer}"])  # named, but gone
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = strict_json_loads(report_path.read_text())
    assert str(corpus) in report["validation_elbo"]["skipped"]
    assert "validation ELBO: skipped" in captured.out
    assert isinstance(report["results"][0]["example"], str) and report["results"][0]["unigram_entropy"] >= 0


def test_bpe_text_run_decodes_from_the_checkpoint_alone(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tokenizers")
    from sampler.data import get_source

    cache = tmp_path / "cache"
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(cache))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    spec = f"text:{corpus}?tokenizer=bpe&tokenizer_vocab_size=300"
    run = train_text_run(tmp_path, spec)
    expected = get_source(spec, seq_len=16).tokenizer  # the tokenizer the run was trained with
    corpus.unlink()
    shutil.rmtree(cache / "tokenizers")  # the cached BPE file is gone too: only the checkpoint remains

    records, err = sample_records(run, tmp_path, capsys)
    assert "warning" not in err
    for record in records:
        assert record["text"] == expected.decode(record["ids"])


def test_distilled_student_keeps_the_teachers_tokenizer(tmp_path, monkeypatch, capsys):
    from sampler.checkpoint import load_checkpoint
    from sampler.train.distill import DistillConfig, distill

    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    teacher = train_text_run(tmp_path, f"text:{corpus}")
    student = tmp_path / "student"
    distill(DistillConfig(teacher=str(teacher), out=str(student), start_steps=4, target_steps=2, steps_per_round=1,
                          batch_size=2, progress=False, device="cpu", save_every=10**6, log_every=10**6))
    assert load_checkpoint(student)[1]["tokenizer"] == load_checkpoint(teacher)[1]["tokenizer"]
    corpus.unlink()
    records, _ = sample_records(student, tmp_path, capsys)
    assert all(record["text"] == ByteTokenizer.fit(CORPUS).decode(record["ids"]) for record in records)


def test_bpe_decodes_characters_split_across_tokens():
    """Byte-level BPE splits multi-byte characters across tokens (日 and 本 share a token here);
    decoding the whole sequence restores them, decoding token by token would not (U+FFFD)."""
    pytest.importorskip("tokenizers")
    from sampler.data.text import BPETokenizer, tokenizer_from_dict

    text = "日本語 café naïve — “quoted” 🙂 " * 40
    trained = BPETokenizer.__new__(BPETokenizer)
    trained._set(_train_bpe(text, 280), 280)
    tokenizer = tokenizer_from_dict(json.loads(json.dumps(trained.to_dict())))  # through the checkpoint's JSON
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and "\ufffd" not in tokenizer.decode(ids)
    per_token = "".join(tokenizer.decode([i]) for i in ids)
    assert "\ufffd" in per_token  # the text does split characters across tokens: the check above is not vacuous


def _train_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tokenizer


def test_tokenizer_state_round_trips_and_refuses_what_it_cannot_decode():
    from sampler.data.text import tokenizer_from_dict

    byte = ByteTokenizer.fit("héllo")
    assert tokenizer_from_dict(byte.to_dict()).alphabet == byte.alphabet
    char = CharTokenizer(" ab.")
    assert tokenizer_from_dict(char.to_dict()).decode([1, 2, 0, 3]) == "ab ."
    with pytest.raises(ValueError, match="json"):
        tokenizer_from_dict({"kind": "bpe", "vocab_size": 300})  # a state with its size only
    with pytest.raises(ValueError, match="kind"):
        tokenizer_from_dict({"kind": "wordpiece"})


def _offline(*args, **kwargs):
    return subprocess.CompletedProcess(args, 1, stdout="", stderr="Could not fetch URL: network is unreachable")


def test_uncached_corpus_offline_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    from sampler.data import text

    cache = tmp_path / "cache"
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(cache))
    monkeypatch.setattr(text.subprocess, "run", _offline)
    out = tmp_path / "run"
    assert main(["train", "--data", "shakespeare", "--out", str(out), "--max-steps", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "fetching the Shakespeare corpus" in err  # the one line before the fetch
    assert "mcd fetch shakespeare" in err and str(cache / "corpora" / "shakespeare") in err and "offline" in err
    assert not (out / "checkpoint.safetensors").exists()
    assert main(["fetch", "shakespeare"]) == 2
    assert "mcd fetch shakespeare" in capsys.readouterr().err


def test_corpus_moved_after_training_is_named_when_the_data_is_needed(tmp_path, monkeypatch, capsys):
    """`mcd train --resume` needs the data itself: the moved corpus is a clear error, not a traceback."""
    monkeypatch.setenv("LATENT_SHADOWS_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = train_text_run(tmp_path, f"text:{corpus}")
    corpus.unlink()
    from sampler.data import get_source
    from sampler.data.text import CorpusUnavailableError

    with pytest.raises(CorpusUnavailableError, match="corpus"):
        get_source(f"text:{corpus}")
    assert main(["train", "--data", f"text:{corpus}", "--out", str(run), "--resume", "--max-steps", "5",
                 "--device", "cpu", "--seq-len", "16", "--batch-size", "4"]) == 2
    assert str(corpus) in capsys.readouterr().err
