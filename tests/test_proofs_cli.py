"""`mcd verify` end to end: the --quick suite through the CLI into a tmp dir (what CI runs).

The suite's false-fail rate is <= 1e-6 (stated in its report); every mutant must be caught."""

from __future__ import annotations


import pytest
import torch

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
    assert "claims pass" in capsys.readouterr().out


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


def test_unknown_claim_is_refused(tmp_path, capsys) -> None:
    assert main(["verify", "--claims", "42", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "42" in capsys.readouterr().err
