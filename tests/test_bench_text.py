"""`mcd bench-text`: argument errors before torch loads, the student rows on a tiny distilled text checkpoint, the
whole command on tiny runs (summary, JSON, decoded samples of every row), and the cache of the dequantised
evaluator (keyed by the file's contents, written atomically).

Planted bugs (tests/PLANTED_BUGS.md, BT1-BT9)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sampler.cli import main as mcd
from sampler.cli import subcommand_parser
from sampler.cli.bench_text import command_line
from sampler.configs import TextBenchConfig
from sampler.quality.gen_perplexity import StillQuantisedError, cached_conversion, file_key, save_dequantised
from sampler.quality.tiny_evaluator import make_tiny_evaluator
from sampler.run.open import open_run
from sampler.run.text_bench import student_labels, student_row, timed_draw
from sampler.train import DistillConfig, distill
from teacher_fixtures import make_teacher, make_text_teacher, strict_json_loads

ROOT = Path(__file__).resolve().parents[1]
# runs `mcd ARGS`, then reports whether torch was imported, on its last line
PROBE = ("import sys; from sampler.cli import main; code = main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")


@pytest.mark.parametrize("args,named", [
    (["bench-text"], "--teacher and --data are required"),
    (["bench-text", "--teacher", "MISSING", "--data", "shakespeare"], "--teacher"),
    (["bench-text", "--teacher", "DIR", "--data", "shakespeare", "--student", "MISSING:4"], "--student"),
    (["bench-text", "--teacher", "DIR", "--data", "shakespeare", "--student", "DIR:0"], "--student"),
    (["bench-text", "--teacher", "DIR", "--data", "shakespeare", "--evaluator", "no-such-model"], "--evaluator"),
    (["bench-text", "--smoke", "--recall-ks", "1", "3"], "--recall-ks"),
    (["bench-text", "--smoke", "--temperatures", "0"], "--temperatures"),
    (["bench-text", "--smoke", "--num", "1"], "--num"),
    (["bench-text", "--smoke", "--steps", "0"], "--steps"),
    (["bench-text", "--smoke", "--out", "FILE"], "--out"),
])
def test_an_argument_error_exits_2_naming_it_without_importing_torch(tmp_path: Path, args: list[str], named: str) -> None:
    """Planted bug BT1: sampler/cli/bench_text.py importing its back-end (sampler.run.text_bench) at the top."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    places = {"MISSING": str(tmp_path / "missing"), "DIR": str(tmp_path / "dir"), "FILE": str(tmp_path / "file")}
    args = [places.get(a.split(":")[0], a.split(":")[0]) + (":" + a.split(":")[1] if ":" in a else "") for a in args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch"


def test_the_help_states_the_cost_of_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert mcd(["bench-text", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: [1024, 256, 64, 16, 8, 4])" in text and "hours on one CPU thread" in text and "took 16 minutes" in text


# ------------------------------------------------------------------------------------------- student rows

STUDENT_TARGET = 2  # the tiny student's target steps (its config.json says so)


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny byte-level text teacher (L = 16, 3 steps) and an MCD student distilled from it (4 -> 2 steps)."""
    tmp = tmp_path_factory.mktemp("bench-text")
    teacher, spec = make_text_teacher(tmp, steps=3)
    student = tmp / "student-run"
    distill(DistillConfig(teacher=str(teacher), out=str(student), method="mcd", start_steps=4, target_steps=STUDENT_TARGET,
                          steps_per_round=1, batch_size=4, warmup=1, save_every=10**6, log_every=10**6, progress=False,
                          device="cpu", seed=0))
    return {"teacher": str(teacher), "student": str(student), "data": spec, "tmp": str(tmp)}


def _config(runs: dict[str, str], **changes) -> TextBenchConfig:
    return TextBenchConfig(teacher=runs["teacher"], data=runs["data"], recall_ks=(1,), recall_num=2, **changes)


def test_a_student_row_samples_at_the_target_steps_of_its_config(text_runs: dict[str, str]) -> None:
    """Planted bug BT2: the student row sampled at the teacher's step counts (or a fixed 4) instead of its own."""
    stored = json.loads((Path(text_runs["student"]) / "config.json").read_text())
    assert stored["distill"]["config"]["target_steps"] == STUDENT_TARGET  # the fixture's premise
    teacher = open_run(text_runs["teacher"], device="cpu")
    row = student_row(text_runs["student"], _config(text_runs), teacher, "mcd")
    assert (row.name, row.steps) == ("student:mcd", STUDENT_TARGET)
    samples, cost = timed_draw(row.model, lambda: row.draw(1.0, 5, 0), 16)
    assert samples.shape == (5, 16) and samples.dtype == torch.int64
    assert int(samples.min()) >= 0 and int(samples.max()) < teacher.model.config.vocab_size  # no mask token left
    assert 0 < cost["forward_passes"] <= STUDENT_TARGET  # one network pass per step at most
    recall = row.recall(torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)), 1.0)
    assert recall["k"] == 1 and recall["value"] > 0 and torch.isfinite(torch.tensor(recall["value"]))


def test_a_student_spec_with_steps_overrides_its_target(text_runs: dict[str, str]) -> None:
    teacher = open_run(text_runs["teacher"], device="cpu")
    row = student_row(f"{text_runs['student']}:4", _config(text_runs), teacher, "mcd")
    assert row.steps == 4


def test_a_student_without_steps_or_of_another_teacher_is_refused(text_runs: dict[str, str], tmp_path: Path) -> None:
    """Planted bug BT3: the shape check dropped (a student of another corpus decoded with this teacher's tokenizer)."""
    teacher = open_run(text_runs["teacher"], device="cpu")
    with pytest.raises(ValueError, match="--student .*no step count"):  # a teacher run has no distillation meta
        student_row(text_runs["teacher"], _config(text_runs), teacher, "t")
    other = open_run(make_teacher(tmp_path / "exact-teacher", seq_len=12), device="cpu")  # another vocabulary and length
    with pytest.raises(ValueError, match="--student .*not a student of this teacher"):
        student_row(text_runs["student"], _config(text_runs), other, "mcd")


def test_students_sharing_a_directory_name_are_told_apart() -> None:
    """Planted bug BT4: rows named by the directory only (two seeds' students merge into one frontier)."""
    assert student_labels(("a/mcd", "b/mcd:4", "c/baseline")) == ["a/mcd", "b/mcd", "baseline"]


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="the evaluator needs the `text` extra")
def test_the_command_measures_the_student_and_shows_decoded_samples_of_every_row(
        text_runs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    tmp = Path(text_runs["tmp"])
    evaluator = make_tiny_evaluator(tmp / "evaluator")
    out = tmp / "bench"
    code = mcd(["bench-text", "--teacher", text_runs["teacher"], "--student", text_runs["student"], "--data", text_runs["data"],
                "--evaluator", str(evaluator), "--steps", "4", "--confidence-steps", "--temperatures", "0.9", "1.0",
                "--num", "3", "--recall-num", "2", "--recall-ks", "1", "--heldout-num", "8", "--nll-num", "2",
                "--bootstrap", "2", "--threads", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    summary = capsys.readouterr().out
    assert "student:student-run" in summary and f"written: {out / 'text_bench.md'}" in summary
    report = strict_json_loads((out / "text_bench.json").read_text())
    assert {(r["sampler"], r["steps"], r["temperature"]) for r in report["rows"]} == {
        ("heldout", None, None), ("teacher/ancestral", 4, 0.9), ("teacher/ancestral", 4, 1.0),
        ("student:student-run", STUDENT_TARGET, 0.9), ("student:student-run", STUDENT_TARGET, 1.0)}
    markdown = (out / "text_bench.md").read_text()
    samples = markdown.split("## Samples")[1]
    for row in report["rows"]:  # each row's decoded samples (at the recall temperature) are in the report
        if row["temperature"] in (None, 1.0):
            assert all(text.replace("```", "'''") in samples for text in row["examples"]), row["sampler"]
    assert f"**student:student-run** steps {STUDENT_TARGET}, T 1.0:" in samples
    assert mcd(["bench-text", "--teacher", text_runs["teacher"], "--data", text_runs["data"], "--evaluator", str(evaluator),
                "--steps", "2", "--confidence-steps", "--temperatures", "1.0", "--num", "2", "--recall-num", "2",
                "--recall-ks", "1", "--heldout-num", "4", "--nll-num", "2", "--bootstrap", "2", "--out", str(tmp / "b2"),
                "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["matched"][0]["sampler"] == "teacher/ancestral" and printed["written"][0] == str(tmp / "b2" / "text_bench.md")


# ------------------------------------------------------------------------------ the dequantised evaluator's cache


class FakeConversion:
    """A conversion that records its calls, checks that the entry does not exist while it writes (the entry
    appears complete or not at all), and can fail half-way."""

    def __init__(self, entry: Path, fail: bool = False) -> None:
        self.entry, self.fail, self.calls = entry, fail, 0

    def __call__(self, directory: Path) -> None:
        self.calls += 1
        assert directory != self.entry and not self.entry.exists()
        (directory / "weights.bin").write_bytes(b"w" * 10)
        if self.fail:
            raise RuntimeError("stopped half-way")


def test_the_first_load_converts_and_later_loads_read_the_entry(tmp_path: Path) -> None:
    """Planted bug BT5: the entry looked up under another key than it is written under (converts every time)."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"abc" * 100)
    root = tmp_path / "cache"
    convert = FakeConversion(root / file_key(model))
    entry, wrote = cached_conversion(model, root, convert)
    assert wrote and convert.calls == 1 and entry == convert.entry and (entry / "weights.bin").read_bytes() == b"w" * 10
    assert json.loads((entry / "source.json").read_text()) == {"source": str(model), "size": 300, "key": entry.name}
    again, wrote_again = cached_conversion(model, root, convert)
    assert (again, wrote_again, convert.calls) == (entry, False, 1)
    assert sorted(p.name for p in root.iterdir()) == [entry.name]  # no temporary directory left


def test_a_changed_file_of_the_same_size_gets_a_new_entry(tmp_path: Path) -> None:
    """Planted bug BT6: the key made of the name and size only (a changed package would read the old weights)."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"abc" * 100)
    root = tmp_path / "cache"
    first, _ = cached_conversion(model, root, FakeConversion(root / file_key(model)))
    model.write_bytes(b"abd" * 100)  # same name, same size, other contents
    convert = FakeConversion(root / file_key(model))
    second, wrote = cached_conversion(model, root, convert)
    assert wrote and second != first and convert.calls == 1
    assert file_key(model).startswith("model-300-") and len(file_key(model).rsplit("-", 1)[1]) == 16


def test_a_failed_conversion_leaves_no_entry_and_no_partial_directory(tmp_path: Path) -> None:
    """Planted bug BT9: the conversion written straight into the entry (an interrupted load leaves a half entry)."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"abc" * 100)
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="half-way"):
        cached_conversion(model, root, FakeConversion(root / file_key(model), fail=True))
    assert list(root.iterdir()) == []
    convert = FakeConversion(root / file_key(model))
    entry, wrote = cached_conversion(model, root, convert)  # the next load converts again, completely
    assert wrote and convert.calls == 1 and (entry / "source.json").is_file()


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="the evaluator needs the `text` extra")
def test_a_dequantised_model_is_saved_plain_and_one_with_packed_layers_is_refused(tmp_path: Path) -> None:
    """Planted bug BT7: the GGUF loader's quantizer left on the model (saving refuses: the cache is never written)."""
    import transformers  # the `text` extra

    source = make_tiny_evaluator(tmp_path / "evaluator")
    model = transformers.AutoModelForCausalLM.from_pretrained(source).eval()

    class LoaderMarker:  # what the GGUF loader leaves on an unpacked model: save_pretrained refuses while it is there
        def remove_quantization_config(self, m: torch.nn.Module) -> None:
            del m.hf_quantizer

    model.hf_quantizer = LoaderMarker()
    save_dequantised(model, tmp_path / "saved")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)

    class GgufLinear(torch.nn.Module):  # a layer that keeps its GGUF blocks
        pass

    model.packed = GgufLinear()
    with pytest.raises(StillQuantisedError, match="GgufLinear"):
        save_dequantised(model, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_the_report_records_the_command_of_the_arguments_given() -> None:
    """Planted bug BT8: the command read from sys.argv (a caller of main(argv) gets its own process's arguments)."""
    argv = ["--teacher", "runs/t", "--student", "a/mcd", "--student", "b/mcd:4", "--data", "shakespeare", "--steps", "64",
            "16", "--confidence-steps", "--num", "8", "--smoke"]
    args = subcommand_parser("bench-text").parse_args(argv)
    assert command_line(args) == ("mcd bench-text --teacher runs/t --student a/mcd --student b/mcd:4 --data shakespeare "
                                  "--steps 64 16 --confidence-steps --num 8 --smoke")
    assert subcommand_parser("bench-text").parse_args(command_line(args).split()[2:]) == args  # it reproduces the run


def test_a_shadow_students_row_reports_its_sequential_recall_bound_and_its_heads_cost(text_runs: dict[str, str]) -> None:
    """A causal shadow student's row carries the sequential importance bound of its noise-shared sampler, the
    estimator `recall_with_diagnostic` uses for it (recomputed here by `recall_versus_k` directly, same seed).
    Planted bugs: BT10, the student's recall left "unavailable"; BT11, the plain reveal-pattern estimator applied to
    it (refused: the student does not run a per-token-independent sampler); BT12, its noise head left out of the
    row's cost (sampler.cost counts base trunk + head: 2 passes a step)."""
    from sampler.cost import passes_per_call
    from sampler.quality.recall_convergence import recall_versus_k

    shadow = Path(text_runs["tmp"]) / "shadow-run"
    if not (shadow / "checkpoint.safetensors").exists():
        distill(DistillConfig(teacher=text_runs["teacher"], out=str(shadow), method="shadow", coupling="uniform",
                              shadow_head="causal", start_steps=2, target_steps=2, shadow_substeps=2, steps_per_round=1,
                              batch_size=4, warmup=1, save_every=10**6, log_every=10**6, progress=False, device="cpu",
                              temperature=False, seed=0))
    teacher = open_run(text_runs["teacher"], device="cpu")
    config = TextBenchConfig(teacher=text_runs["teacher"], data=text_runs["data"], recall_ks=(1, 4), recall_num=2)
    row = student_row(str(shadow), config, teacher, "shadow")
    heldout = torch.randint(0, teacher.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    recall = row.recall(heldout, 1.0)
    assert "unavailable" not in recall and recall["bound"] == "reveal patterns (sequential)"
    expected = recall_versus_k(row.model, teacher.schedule, heldout, steps=2, estimator="sequential", ks=(1, 4),
                               seed=config.seed)
    assert recall["value"] == pytest.approx(expected["recall"], rel=1e-12) and recall["k"] == 4
    with pytest.raises(ValueError, match="sequential"):  # BT11 would stop the row here
        recall_versus_k(row.model, teacher.schedule, heldout, steps=2, estimator="plain", ks=(1, 4), seed=config.seed)
    base_rows: list[int] = []  # rows entering the student's base trunk, counted here apart from the bench's counter
    handle = row.model.base.embed.register_forward_hook(lambda _m, inputs, _o: base_rows.append(int(inputs[0].shape[0])))
    try:
        _, cost = timed_draw(row.model, lambda: row.draw(1.0, 5, 0), 16)
    finally:
        handle.remove()
    # BT12: the noise head not counted (a causal step priced as one pass, half of sampler.cost's convention)
    assert passes_per_call(row.model) == 2 and sum(base_rows) > 0
    assert cost["forward_passes"] == pytest.approx(passes_per_call(row.model) * sum(base_rows) / 5)
