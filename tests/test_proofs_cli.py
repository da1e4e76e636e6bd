"""`mcd verify` end to end: the --quick suite through the CLI into a tmp dir (what CI runs).

The suite's false-fail rate is <= 1e-6 (stated in its report); every mutant must be caught."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from proofs_checks import report, stats
from sampler.cli import main
from teacher_fixtures import strict_json_loads

CLAIM_KEYS = {"id", "statement", "kind", "passed", "n", "false_fail_rate", "detectable_discrepancy", "statistic", "threshold"}
MUTANT_KEYS = {"name", "claim", "caught"}


@pytest.mark.slow
def test_quick_suite_end_to_end(tmp_path, capsys) -> None:
    code = main(["verify", "--quick", "--out", str(tmp_path), "--seed", "3", "--no-progress"])
    report = strict_json_loads((tmp_path / "report.json").read_text())
    failing = [c["id"] for c in report["claims"] if not c["passed"]]
    survived = [m["name"] for m in report["mutants"] if not m["caught"]]
    assert code == 0, (failing, survived)
    assert report["passed"] is True
    assert [c["id"] for c in report["claims"]] == list(range(1, 13))
    for claim in report["claims"]:
        assert CLAIM_KEYS <= set(claim), claim["id"]
        assert isinstance(claim["passed"], bool) and isinstance(claim["n"], int)
        assert 0.0 <= claim["false_fail_rate"] <= 1e-6
    monte_carlo = [c for c in report["claims"] if c["kind"] != "symbolic"]
    assert all(c["n"] > 0 and c["detectable_discrepancy"] is not None for c in monte_carlo)
    assert report["mutants"] and all(MUTANT_KEYS <= set(m) for m in report["mutants"])
    assert not survived
    assert {m["claim"] for m in report["mutants"]} >= {c["id"] for c in monte_carlo}
    assert report["seed"] == 3 and report["seconds"] > 0 and "torch" in report["package_versions"]
    assert report["suite_false_fail_rate"] <= 1e-6 * (1 + 1e-9)
    for name in ("report.md", "alpha_curves.png", "unmasking_cdfs.png", "reappearance.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert_table_rows_have_the_header_cells((tmp_path / "report.md").read_text(encoding="utf-8"))
    assert "claims pass" in capsys.readouterr().out


def table_cells(row: str) -> list[str]:
    """The cells of a markdown table row (a '|' escaped as '\\|' stays inside its cell)."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def assert_table_rows_have_the_header_cells(markdown: str) -> None:
    """Every row of every table in `markdown` has as many cells as its header (units such as |p̂ − p| escaped)."""
    header_cells = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header_cells = None
        elif header_cells is None:
            header_cells = len(table_cells(line))
        else:
            assert len(table_cells(line)) == header_cells, line


def test_cuda_requested_without_gpu_is_a_clear_error(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["verify", "--quick", "--device", "cuda", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "cuda" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_subset_of_claims_and_exit_status(tmp_path) -> None:
    code = main(["verify", "--quick", "--claims", "2", "--out", str(tmp_path), "--no-progress"])
    report = strict_json_loads((tmp_path / "report.json").read_text())
    assert code == 0 and [c["id"] for c in report["claims"]] == [2]
    assert {m["claim"] for m in report["mutants"]} == {2}
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert 'What "passed" means' in markdown and "planted bugs" in markdown
    assert_table_rows_have_the_header_cells(markdown)
    claim_row = next(line for line in markdown.splitlines() if line.startswith("| 2 |"))
    assert "count" in table_cells(claim_row)[-1].split("—")[1], claim_row  # "statistic / threshold — unit": violations are a count


def one_result_of_every_kind() -> list:
    """One TestResult from each test constructor of proofs_checks.stats (and a sympy one, as the symbolic claim builds it)."""
    return [
        stats.dkw_test("dkw", np.array([0.5]), np.array([0.5]), 100, 1e-3, 1e-3),
        stats.binomial_test("binomial", 50, 100, 0.5, 1e-3, 1e-3),
        stats.binomial_family_test("family", np.array([50]), np.array([100]), np.array([0.5]), 1e-3, 1e-3),
        stats.two_sample_test("two-sample", np.array([0.5]), np.array([0.5]), 100, 100, 1e-3, 1e-3),
        stats.zero_violation_test("zero", 0, 100, 1e-3),
        stats.positive_rate_test("positive", 3, 100, 1e-3, 1e-3),
        stats.bernstein_test("bernstein", 0.0, 0.0, 1.0, 1.0, 100, 1e-3, 1e-3, unit="nats"),
        stats.empirical_bernstein_test("empirical", 0.0, 0.0, 1.0, 1.0, 100, 1e-3, 1e-3),
        stats.tolerance_test("relative tolerance", 1e-9, 1e-6, unit="relative"),
        stats.tolerance_test("absolute tolerance", 1e-9, 1e-6),
        stats.TestResult(name="proof", method="sympy", statistic=0.0, threshold=0.0, passed=True, n=0,
                         false_fail_rate=0.0, false_pass_rate=None, detectable_discrepancy=None),
    ]


def test_every_statistic_has_a_unit_in_the_report() -> None:
    """The report's "statistic / threshold" columns name what each statistic is: a KS distance for DKW, a
    relative error for a relative tolerance, the test's own unit for a deviation of means, ..."""
    units = {result.name: report.statistic_unit(result) for result in one_result_of_every_kind()}
    assert units["dkw"].startswith("KS distance")
    assert units["relative tolerance"] == "relative error" and units["absolute tolerance"] == "absolute error"
    assert "nats" in units["bernstein"] and "ratio" in units["family"] and "count" in units["zero"]
    assert len(set(units.values())) == len(units)  # no two kinds share a description
    assert "|" in units["dkw"] and all(len(table_cells(f"| {report._table_cell(unit)} |")) == 1 for unit in units.values())
    unknown = stats.tolerance_test("x", 0.0, 1.0)
    unknown.method = "made-up method"
    with pytest.raises(ValueError, match="made-up method"):
        report.statistic_unit(unknown)


def test_unknown_claim_is_refused(tmp_path, capsys) -> None:
    assert main(["verify", "--claims", "42", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "42" in capsys.readouterr().err
