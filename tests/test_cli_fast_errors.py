"""An argument error is refused before torch loads: every subcommand checks its arguments, its config and its output
path first, and imports its back-end (BACKEND) only then, so a typo costs well under a second of CPU."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sampler.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
# runs `mcd ARGS`, then reports whether torch was imported, on its last line
PROBE = ("import sys; from sampler.cli import main; code = main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")
CPU_LIMIT_S = 1.0  # an argument error's budget of CPU time (user + system) in the child, interpreter start included


def _run_probe(args: list[str], cwd: Path, code: str = PROBE, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """(the finished child, its CPU seconds: user + system, from resource.getrusage of the children)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ, cwd=cwd, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("args,named", [
    (["train", "--out", "OUT", "--lr", "abc"], "--lr"),
    (["train", "--out", "OUT", "--steps", "0"], "max_steps"),
    (["train", "--out", "OUT", "--lr", "-1"], "lr must be positive"),
    (["train", "--out", "OUT", "--resume"], "--resume"),
    (["train", "--out", "FILE"], "--out"),
    (["distill", "--teacher", "T", "--out", "OUT", "--lr", "abc"], "--lr"),
    (["distill", "--teacher", "T", "--out", "OUT", "--target-steps", "3"], "target_steps"),
    (["distill", "--teacher", "T", "--out", "OUT", "--paper-temperature", "--no-temperature"], "--no-temperature"),
    (["verify", "--threads", "0"], "--threads"),
    (["verify", "--out", "FILE"], "--out"),
    (["sample", "--ckpt", "OUT", "--steps", "0"], "--steps"),
    (["sample", "--ckpt", "OUT", "--temperature", "0"], "--temperature"),
    (["sample", "--ckpt", "OUT"], "--ckpt"),
    (["sample", "--ckpt", "RUN", "--out", "DIR"], "--out"),
    (["sample", "--ckpt", "RUN", "--out", "FILE"], "--overwrite"),
    (["eval", "--ckpt", "OUT", "--num", "1"], "--num"),
    (["eval", "--ckpt", "OUT", "--recall-k", "8"], "--recall-k"),
    (["eval", "--ckpt", "OUT", "--temperatures", "0"], "--temperatures"),
    (["eval", "--ckpt", "OUT", "--recall-tolerance", "-1"], "--recall-tolerance"),
    (["eval", "--ckpt", "OUT", "--evaluator", "no-such-model"], "--evaluator"),
    (["eval", "--ckpt", "OUT"], "--ckpt"),
    (["eval", "--ckpt", "RUN", "--out", "DIR"], "--out"),
    (["eval", "--ckpt", "RUN", "--out", "FILE"], "--overwrite"),
    (["bench-distill", "--out", "OUT", "--arms", "mcd,mcdd"], "--arms"),
    (["bench-distill", "--out", "OUT", "--temperatures", "0.8,0.9"], "temperatures"),
    (["bench-distill", "--out", "OUT", "--start-steps", "64", "--target-steps", "3"], "target_steps"),
    (["bench-distill", "--out", "OUT", "--recall-k", "8"], "recall_k"),
    (["bench-distill", "--out", "OUT", "--lr", "-1"], "lr"),
    (["bench-distill", "--out", "OUT", "--teacher", "T"], "--teacher"),
    (["bench-distill", "--out", "FILE"], "--out"),
    (["fetch", "shakespear"], "what"),
])
def test_an_argument_error_exits_2_naming_it_without_importing_torch(tmp_path: Path, args: list[str], named: str) -> None:
    """Planted bugs: a cli module importing its back-end at the top again (torch loads before the check, about
    3 s of CPU); a check that lets the bad value through to the back-end (torch imported, or exit 0)."""
    (tmp_path / "file").write_text("a file where a directory or a new file belongs")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.safetensors").write_bytes(b"")  # present (never read: the check refuses first)
    (tmp_path / "dir").mkdir()
    places = {"OUT": tmp_path / "out", "FILE": tmp_path / "file", "RUN": tmp_path / "run", "DIR": tmp_path / "dir"}
    args = [str(places.get(a, a)) for a in args]
    done, cpu_s = _run_probe(args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch"
    assert cpu_s < CPU_LIMIT_S, f"{cpu_s:.2f} s of CPU for an argument error"
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "file").read_text() == "a file where a directory or a new file belongs"


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_an_existing_report_is_replaced_only_with_overwrite(tmp_path: Path, command: str) -> None:
    """Planted bug: --overwrite parsed but not passed to the output check (the check refuses either way), or the
    check dropped (an existing report replaced unasked: the parametrised case above)."""
    import importlib

    from sampler.cli import subcommand_parser

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.safetensors").write_bytes(b"")
    (tmp_path / "report").write_text("an earlier report")
    argv = [command, "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "report")]
    module, parser = importlib.import_module(SUBCOMMANDS[command][0]), subcommand_parser(command)
    with pytest.raises(ValueError, match="--overwrite"):
        module.check(parser.parse_args(argv[1:]))
    assert module.check(parser.parse_args([*argv[1:], "--overwrite"])).output_file() == tmp_path / "report"


def test_a_cache_directory_that_is_a_file_stops_mcd_fetch_before_torch(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a directory")
    done, cpu_s = _run_probe(["fetch", "shakespeare"], tmp_path, LATENT_SHADOWS_CACHE=str(tmp_path / "cache"))
    assert done.returncode == 2 and "LATENT_SHADOWS_CACHE" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no torch"
    assert cpu_s < CPU_LIMIT_S


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_names_its_back_end_and_imports_no_torch_itself(name: str, tmp_path: Path) -> None:
    """The dispatcher's fast-error path applies to every subcommand: its module names a BACKEND, has `check`, and
    importing it (with its parser built) loads no torch.  Planted bug: a new subcommand written without BACKEND."""
    code = ("import sys; from sampler.cli import SUBCOMMANDS, subcommand_parser; import importlib; "
            f"m = importlib.import_module(SUBCOMMANDS[{name!r}][0]); subcommand_parser({name!r}); "
            "print(getattr(m, 'BACKEND', None), callable(getattr(m, 'check', None)), 'torch' in sys.modules)")
    done, _ = _run_probe([], tmp_path, code=code)
    backend, has_check, torch_loaded = done.stdout.split()
    assert backend != "None" and has_check == "True" and torch_loaded == "False", done.stdout + done.stderr
