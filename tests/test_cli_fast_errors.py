"""An argument error is refused before torch loads: `mcd train`, `mcd distill`, `mcd sample` and `mcd verify` check their
arguments, their config and their output path first, and import their back-end only then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# runs `mcd ARGS`, then reports whether torch was imported, on its last line
PROBE = ("import sys; from sampler.cli import main; code = main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")


@pytest.mark.parametrize("args,named", [
    (["train", "--out", "OUT", "--lr", "abc"], "--lr"),
    (["train", "--out", "OUT", "--steps", "0"], "max_steps"),
    (["train", "--out", "OUT", "--lr", "-1"], "lr must be positive"),
    (["train", "--out", "OUT", "--resume"], "--resume"),
    (["distill", "--teacher", "T", "--out", "OUT", "--lr", "abc"], "--lr"),
    (["distill", "--teacher", "T", "--out", "OUT", "--target-steps", "3"], "target_steps"),
    (["distill", "--teacher", "T", "--out", "OUT", "--paper-temperature", "--no-temperature"], "--no-temperature"),
    (["verify", "--threads", "0"], "--threads"),
    (["sample", "--ckpt", "OUT", "--steps", "0"], "--steps"),
    (["sample", "--ckpt", "OUT", "--temperature", "0"], "--temperature"),
])
def test_an_argument_error_exits_2_naming_it_without_importing_torch(tmp_path: Path, args: list[str], named: str) -> None:
    """Planted bug: a cli module importing its back-end at the top again (torch loads before the check)."""
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch"
    assert not (tmp_path / "out").exists()
