"""What can be checked of the CUDA paths on a CPU machine: device arguments, the autocast dtype, and the
GPU check script's commands (benchmarks/gpu_check.sh runs them on a GPU)."""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from sampler.cli import SUBCOMMANDS, main
from sampler import device as devices
from teacher_fixtures import make_teacher

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("device", ["meta", "mps", "bogus", "cuda:7"])
def test_bad_device_is_a_clear_error_in_every_subcommand(tmp_path, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA present: cuda:7 may exist")
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "out"
    commands = {
        "train": ["train", "--out", str(out), "--max-steps", "1"],
        "distill": ["distill", "--teacher", str(teacher), "--out", str(out), "--max-steps", "1"],
        "sample": ["sample", "--ckpt", str(teacher), "--out", str(tmp_path / "s.jsonl")],
        "eval": ["eval", "--ckpt", str(teacher), "--out", str(tmp_path / "e.json")],
    }
    for name, argv in commands.items():
        assert main([*argv, "--device", device]) == 2, name
        err = capsys.readouterr().err
        assert "device" in err and device in err, (name, err)
        assert not (out / "checkpoint.safetensors").exists(), name


def test_cuda_index_beyond_the_device_count_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.pick_device("cuda:0") == torch.device("cuda", 0)
    assert devices.pick_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match="1 CUDA device"):
        devices.pick_device("cuda:7")


def test_autocast_is_bf16_on_cuda_and_off_on_cpu():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available, disabling autocast" on a CPU machine
        on_cuda = devices.autocast(torch.device("cuda"))
    assert isinstance(on_cuda, torch.autocast) and on_cuda.fast_dtype == torch.bfloat16 and on_cuda.device == "cuda"
    layer = torch.nn.Linear(4, 4)
    with devices.autocast("cpu"):
        assert layer(torch.ones(2, 4)).dtype == torch.float32  # CPU: full precision, no autocast


def _cli_commands(script_output: str) -> list[list[str]]:
    return [shlex.split(line)[3:] for line in script_output.splitlines() if line.startswith("python -m sampler.cli ")]


def test_gpu_check_script_commands_parse_and_cover_every_cuda_path():
    """The dry run prints the commands; each `mcd` command line must parse with its subcommand's own parser."""
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": "python"}, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = _cli_commands(result.stdout)
    for argv in commands:
        parser = argparse.ArgumentParser(exit_on_error=False)
        importlib.import_module(SUBCOMMANDS[argv[0]][0]).add_arguments(parser)
        args = parser.parse_args(argv[1:])
        assert args.device == "cuda", argv
    seen = {(argv[0], "--compile" in argv, "baseline" in argv) for argv in commands}
    assert {("verify", False, False), ("train", False, False), ("train", True, False), ("distill", False, False),
            ("distill", False, True), ("sample", False, False), ("eval", False, False)} <= seen
    assert "-k cuda" in result.stdout and "bench_coupling.py --device cuda" in result.stdout
    assert any(argv[0] == "train" and "--data" in argv and argv[argv.index("--data") + 1].startswith("text:") for argv in commands)
    assert ["bench-text", "--smoke"] == [argv for argv in commands if argv[0] == "bench-text"][0][:2]
