"""The records that give each concept one home: distillation methods (sampler.train.methods), checkpoint kinds
(sampler.run.open: a kind's loader and sampler, the one place a checkpoint picks its sampler) and the one JSON
converter (strict JSON: NaN and infinities as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import sampler
from sampler.checkpoint import CheckpointError, ShadowCheckpointError
from sampler.data import json_ready, strict_json
from sampler.model import DenoiserConfig, TransformerDenoiser
from sampler.run import open as open_module
from sampler.run.open import CHECKPOINT_KINDS, kind_of_meta, kind_of_model, open_run
from sampler.shadow.student import ShadowStudent, shadow_sample
from sampler.train.config import METHODS, DistillConfig
from sampler.train.distill import distill
from sampler.train.methods import DISTILL_METHODS, distill_method
from teacher_fixtures import make_teacher, strict_json_loads

L = 12


def _shadow_student(tmp_path: Path) -> tuple[Path, Path]:
    teacher = make_teacher(tmp_path / "teacher", seq_len=L)
    out = tmp_path / "student"
    distill(DistillConfig(teacher=str(teacher), out=str(out), method="shadow", coupling="uniform", start_steps=4,
                          target_steps=2, steps_per_round=2, shadow_substeps=2, batch_size=4, save_every=2, log_every=1,
                          device="cpu", progress=False, warmup=1, temperature=False))
    return teacher, out


def test_every_method_has_one_record_naming_its_checkpoint_kind():
    """The --method choices and the records are the same list; each record names a registered checkpoint kind."""
    assert tuple(DISTILL_METHODS) == METHODS
    kinds = {kind.name for kind in CHECKPOINT_KINDS}
    for name, record in DISTILL_METHODS.items():
        assert record.name == name and record.checkpoint_kind in kinds, name
    assert distill_method("shadow").checkpoint_kind == "shadow" and distill_method("mcd").checkpoint_kind == "denoiser"
    with pytest.raises(ValueError, match="method must be one of"):
        distill_method("sdtt")


@pytest.mark.parametrize("coupling", ["uniform", "threshold"])
def test_distill_module_refuses_a_shadow_method_by_name_before_any_file(tmp_path, coupling):
    """distill_module(method="shadow") used to pass validation and fail at step 0 with a TypeError
    (forward() got an unexpected keyword argument 'noise'), leaving metrics.jsonl and .lock behind.  Now: a
    ValueError naming the method, and no run directory at all.  Planted bug caught: the record's refusal skipped."""
    torch.manual_seed(0)
    teacher = TransformerDenoiser(DenoiserConfig.preset("tiny", vocab_size=32, seq_len=L))
    out = tmp_path / "student"
    config = sampler.DistillConfig(teacher="in-memory", out=str(out), method="shadow", coupling=coupling, start_steps=4,
                                   target_steps=2, steps_per_round=2, batch_size=4, progress=False, device="cpu")
    with pytest.raises(ValueError, match="distill_module cannot run method='shadow'"):
        sampler.distill_module(teacher, sampler.make_schedule(), sampler.get_source("exact", seq_len=L), config)
    assert not out.exists()


def test_a_shadow_run_opens_as_its_kind_and_every_entry_point_samples_it_alike(tmp_path):
    """open_run picks the shadow kind from the checkpoint's meta (the plain loader refuses it); `mcd sample`'s
    path (OpenedRun.sample), `sampler.load_run` + `sampler.sample` and the shadow sampler itself give the same
    samples for one seed; a teacher opens as a denoiser and both entry points agree there too."""
    teacher, student = _shadow_student(tmp_path)
    opened = open_run(student, "cpu")
    assert opened.kind.name == "shadow" and isinstance(opened.model, ShadowStudent)
    assert opened.kind is kind_of_model(opened.model) and opened.kind is kind_of_meta(opened.meta)
    direct = shadow_sample(opened.model, opened.schedule, num_steps=2, num_samples=5, seq_len=L, seed=4)
    through_kind = opened.sample(num_samples=5, num_steps=2, seq_len=L, seed=4)
    run = sampler.load_run(student)
    through_api = sampler.sample(run.denoiser, run.schedule, num_samples=5, num_steps=2, seed=4)
    assert torch.equal(direct, through_kind) and torch.equal(direct, through_api)
    with pytest.raises(ValueError, match="final_greedy"):
        opened.sample(num_samples=2, num_steps=2, seq_len=L, seed=0, final_greedy=True)

    plain = open_run(teacher, "cpu")
    assert plain.kind.name == "denoiser" and not isinstance(plain.model, ShadowStudent)
    run = sampler.load_run(teacher)
    assert torch.equal(plain.sample(num_samples=6, num_steps=3, seq_len=L, seed=1),
                       sampler.sample(run.denoiser, run.schedule, num_samples=6, num_steps=3, seed=1))


def test_the_kind_order_matters_and_an_unknown_kind_is_refused(tmp_path, monkeypatch):
    """With the denoiser kind tried first (a planted bug), a shadow checkpoint reaches the plain loader, which
    refuses it by name; with no kind claiming a meta, CheckpointError names the kinds."""
    _, student = _shadow_student(tmp_path)
    monkeypatch.setattr(open_module, "CHECKPOINT_KINDS", list(reversed(CHECKPOINT_KINDS)))
    with pytest.raises(ShadowCheckpointError, match="shadow student"):
        open_run(student, "cpu")
    monkeypatch.setattr(open_module, "CHECKPOINT_KINDS", [k for k in CHECKPOINT_KINDS if k.name == "shadow"])
    with pytest.raises(CheckpointError, match="no known kind"):
        kind_of_meta({"model_config": {}})


def test_json_ready_writes_strict_json():
    """NaN and ±inf become null at any depth (numpy and torch scalars too), numpy arrays lists, larger tensors
    dropped from dicts (None in lists) unless keep_tensors; strict_json refuses nothing it is given and its
    output parses with NaN refused.  Planted bug caught: non-finite floats passed through (json.dumps writes NaN)."""
    value = {"a": float("nan"), "b": [1.0, float("inf"), np.float64(-np.inf)], "c": {"d": torch.tensor(float("nan"))},
             3: np.array([1.5, np.nan]), "e": torch.arange(3), "f": (np.int64(2), np.bool_(True)), "g": Path("x")}
    ready = json_ready(value)
    assert ready == {"a": None, "b": [1.0, None, None], "c": {"d": None}, "3": [1.5, None], "f": [2, True], "g": "x"}
    assert json_ready([torch.arange(2)]) == [None]
    assert json_ready({"e": torch.tensor([1.0, math.inf])}, keep_tensors=True) == {"e": [1.0, None]}
    text = strict_json(value, indent=1)
    assert strict_json_loads(text)["b"] == [1.0, None, None]
    with pytest.raises(ValueError, match="not strict JSON"):
        strict_json_loads(json.dumps({"x": float("nan")}))


def test_a_sample_file_and_an_eval_report_are_strict_json(tmp_path):
    """`mcd sample` and `mcd eval` output parse with NaN refused (more files: the end-to-end tests of eval, the
    bench, verify, metrics.jsonl and the shadow_student benchmark parse theirs the same way)."""
    from sampler.cli import main

    teacher = make_teacher(tmp_path / "teacher", seq_len=L)
    assert main(["sample", "--ckpt", str(teacher), "--steps", "2", "--num", "3", "--device", "cpu",
                 "--out", str(tmp_path / "s.jsonl")]) == 0
    lines = [strict_json_loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert main(["eval", "--ckpt", str(teacher), "--steps", "2", "--num", "4", "--elbo-num", "4", "--device", "cpu",
                 "--evaluator", "none", "--out", str(tmp_path / "e.json")]) == 0
    assert strict_json_loads((tmp_path / "e.json").read_text())["results"][0]["steps"] == 2
