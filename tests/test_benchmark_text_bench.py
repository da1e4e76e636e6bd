"""The text benchmark (sampler.run.text_bench, `mcd bench-text`): the cost counter, the matched-entropy
interpolation, and the whole `--smoke` path through the command line.

Expected values are worked out by hand here (forward passes of a sampler whose calls are known, a straight-line
frontier), not by the benchmark's own path.  Planted bugs (tests/PLANTED_BUGS.md, TB1-TB3): counting calls
instead of the rows in them, sequence equivalents divided by the samples only, the token frontier read for the
character one.
"""

from __future__ import annotations

import math

import pytest
import torch

from sampler.autoregressive import sample as ar_sample
from sampler.cli import main as mcd
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.run import text_bench
from teacher_fixtures import strict_json_loads

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def _bench():
    return text_bench


def test_the_cost_counter_counts_rows_and_positions_of_the_ar_sampler():
    # 3 samples of length 5 drawn one position at a time: 5 passes of all 3 rows, prefixes of 1..5 positions
    bench = _bench()
    torch.manual_seed(0)
    model = TransformerDenoiser(DenoiserConfig(vocab_size=4, seq_len=5, d_model=16, n_layers=1, n_heads=2, causal=True)).eval()
    samples, cost = bench.timed_draw(model, lambda: ar_sample(model, num_samples=3, seq_len=5,
                                                              generator=torch.Generator().manual_seed(0)), 5)
    assert samples.shape == (3, 5)
    assert cost["forward_passes"] == 5.0
    assert cost["sequence_equivalents"] == pytest.approx(3 * (1 + 2 + 3 + 4 + 5) / (3 * 5))  # (L + 1) / 2 = 3
    assert cost["seconds_per_sample"] > 0


def test_the_cost_counter_refuses_a_model_without_a_backbone():
    with pytest.raises(ValueError, match="TransformerDenoiser"):
        with _bench().counting_forwards(torch.nn.Linear(2, 2)):
            pass


def _entry(entropy: float, nll_char: float, nll_token: float) -> dict:
    cost = {"forward_passes": 4.0, "sequence_equivalents": 4.0, "seconds_per_sample": 0.5, "threads": 1}
    return {"sampler": "s", "steps": 4, "unigram_entropy": entropy, "gen_nll_char": nll_char, "gen_nll_token": nll_token,
            "cost": cost}


def test_matched_entropy_interpolates_each_unit_on_its_own_frontier():
    entries = [_entry(1.0, 3.0, 10.0), _entry(2.0, 5.0, 20.0)]
    inside, = _bench().matched_entropy(entries, 1.5)
    assert inside["in_range"] and inside["num_temperatures"] == 2
    assert inside["gen_nll_char"] == pytest.approx(4.0) and inside["gen_ppl_char"] == pytest.approx(math.exp(4.0))
    assert inside["gen_nll_token"] == pytest.approx(15.0)
    outside, = _bench().matched_entropy(entries, 2.5)  # extrapolated along the line through both points, and flagged
    assert not outside["in_range"] and outside["gen_nll_char"] == pytest.approx(6.0)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_smoke_runs_the_whole_text_path_offline(tmp_path, capsys):
    bench = _bench()
    assert mcd(["bench-text", "--smoke", "--out", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert "[smoke" in summary and f"written: {tmp_path / 'text_bench.md'}" in summary and "next:" in summary
    on_disk = strict_json_loads((tmp_path / "text_bench.json").read_text())
    assert on_disk["smoke"] is True and on_disk["rows"][0]["sampler"] == "heldout"
    for plot in on_disk["plots"]:
        assert (tmp_path / plot).stat().st_size > 0
    rows = on_disk["rows"]
    seq_len, vocab = on_disk["seq_len"], on_disk["vocab_size"]
    expected = ({("teacher/ancestral", s) for s in bench.SMOKE_SETTINGS["steps"]}
                | {("teacher/confidence", s) for s in bench.SMOKE_SETTINGS["confidence_steps"]}
                | {("student:student", 4), ("ar", seq_len)})
    assert {(r["sampler"], r["steps"]) for r in rows[1:]} == expected
    assert len(rows) == 1 + len(expected) * len(bench.SMOKE_SETTINGS["temperatures"])
    for row in rows:
        for key in ("gen_nll_char", "gen_ppl_char", "gen_nll_token", "gen_ppl_token", "unigram_entropy"):
            assert _finite(row[key]) and row[key] > 0, (row["sampler"], key)
        assert row["unigram_entropy"] <= math.log(min(seq_len, vocab)) + 1e-9
        assert 0 < row["distinct_2"] <= 1 and 0 < row["distinct_3"] <= 1
        assert all(_finite(row["fidelity_js"][o][k]) for o in ("1", "2", "3") for k in ("js", "reference_js"))
        assert len(row["examples"]) == bench.NUM_SHOWN and all(isinstance(t, str) and t for t in row["examples"])
        if row["sampler"] == "heldout":
            continue
        cost = row["cost"]
        if row["sampler"] == "ar":  # L passes of growing prefixes, no KV cache
            assert cost["forward_passes"] == seq_len and cost["sequence_equivalents"] == pytest.approx((seq_len + 1) / 2)
        else:  # one full-sequence pass per network call, at most one call per step
            assert 0 < cost["forward_passes"] <= row["steps"]
            assert cost["sequence_equivalents"] == pytest.approx(cost["forward_passes"])
        recall = row.get("recall")
        assert (recall is not None) == (row["temperature"] == 1.0)
        if recall is not None:
            assert _finite(recall["value"]) and _finite(recall["value_per_char"]) and recall["value"] > 0
            if row["sampler"] == "teacher/ancestral":
                assert recall["k"] == bench.SMOKE_SETTINGS["recall_ks"][-1] and _finite(recall["change_from_k_over_4"])
    assert len(on_disk["matched"]) == len(expected)
    assert all(_finite(m["gen_ppl_char"]) and _finite(m["gen_ppl_token"]) for m in on_disk["matched"])
    assert _finite(on_disk["target_entropy"]["value"])
    for model in ("teacher_elbo", "ar_exact"):
        assert _finite(on_disk["heldout_nll"][model]["per_char"]) and on_disk["heldout_nll"][model]["per_token"] > 0
    text = (tmp_path / "text_bench.md").read_text()
    assert "## Gen PPL at matched entropy" in text and "## Samples" in text and on_disk["evaluator"] in text
    assert on_disk["command"] == f"mcd bench-text --smoke --out {tmp_path}"


def test_included_rows_must_come_from_the_same_measurement(tmp_path):
    import json
    from dataclasses import replace

    from sampler.configs import TextBenchConfig

    bench = _bench()
    args = TextBenchConfig(data="shakespeare", num=8, seed=0, recall_num=4, recall_temperature=1.0)
    earlier = {"data": "shakespeare", "num": 8, "seed": 0, "seq_len": 16, "evaluator": "ev", "recall_num": 4,
               "recall_temperature": 1.0, "target_entropy": {"value": 2.5},
               "rows": [{"sampler": "heldout"}, {"sampler": "ar", "steps": 16}]}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    rows = bench.included_rows(str(path), args, "ev", 16, 2.5)
    assert rows == [{"sampler": "ar", "steps": 16, "included_from": str(path)}]
    for changed in (dict(num=16), dict(seed=1)):
        with pytest.raises(ValueError, match="--include"):
            bench.included_rows(str(path), replace(args, **changed), "ev", 16, 2.5)
    with pytest.raises(ValueError, match="target_entropy"):  # another held-out sample
        bench.included_rows(str(path), args, "ev", 16, 2.6)
