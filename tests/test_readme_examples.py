"""The README stays true: every ```python block runs as written, every `mcd` command of its tour
parses, and the user documents stay short and free of project bookkeeping.

The Python blocks run in order in one shared namespace (a later block may use an earlier block's names,
as a reader running them in one session would), in a fresh temporary working directory.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from sampler.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
BASH_FENCE = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
TOUR_HEADING = "## A 15-minute tour"
README_MAX_BYTES = 20_000
# Project bookkeeping that user documents must not carry: issue numbers, work "rounds", commit hashes
# (7 to 40 hex digits with at least one letter and one digit, so plain numbers do not count, or any
# 7+ hex digits after the word "commit").
BOOKKEEPING = {
    "issue number": re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
    "'this round'": re.compile(r"\bthis round\b", re.IGNORECASE),
    "commit hash": re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"),
    "commit hash (digits only)": re.compile(r"\bcommit\s+[0-9a-f]{7,40}\b", re.IGNORECASE),
}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block, in order."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def section(text: str, heading: str) -> str:
    """The text of the `## ` section that starts with `heading`, up to the next `## ` heading."""
    if heading not in text:
        raise ValueError(f"heading {heading!r} not found")
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def mcd_commands(text: str) -> list[list[str]]:
    """The argument lists of every `mcd ...` line in the ```bash blocks of `text` (a trailing backslash
    continues a line; `# ...` comments are dropped by shell rules), without the leading `mcd`."""
    commands = []
    for block in BASH_FENCE.finditer(text):
        for line in block.group(1).replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "mcd":
                commands.append(words[1:])
    return commands


def parse_subcommand(argv: list[str]) -> argparse.Namespace:
    """Parse argv (subcommand first) with the parser `mcd` builds for that subcommand, as
    sampler.cli.main does, without running anything.  SystemExit on an argument error."""
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        raise ValueError(f"unknown subcommand {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    module_name, help_ = SUBCOMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"mcd {name}", description=help_)
    importlib.import_module(module_name).add_arguments(parser)
    return parser.parse_args(rest)


def test_extraction_finds_every_python_fence():
    """The extractor is not vacuous: it finds as many blocks as there are ```python fences, and the
    tour holds the library examples (trained run, own module, distillation)."""
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) == len(re.findall(r"^```python", text, re.MULTILINE)) >= 2
    library = python_blocks(section(text, TOUR_HEADING))
    assert len(library) >= 2
    code = "\n".join(body for _, body in library)
    for name in ("sampler.load_run", "sampler.sample(", "sampler.ModuleDenoiser", "sampler.distill_module",
                 "sampler.sample_quality", "sampler.distill_run", "tempfile.mkdtemp()"):
        assert name in code, name


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for line, code in python_blocks(README.read_text(encoding="utf-8")):
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102  (a traceback names the block's line)


def test_the_tour_covers_every_step_and_writes_to_a_temporary_directory():
    tour = section(README.read_text(encoding="utf-8"), TOUR_HEADING)
    commands = mcd_commands(tour)
    assert {argv[0] for argv in commands} >= {"verify", "train", "sample", "eval", "distill"}
    assert any("shadow" in argv for argv in commands), "the tour has a shadow student"
    assert "OUT=$(mktemp -d)" in tour
    for argv in commands:
        paths = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("--out", "--ckpt", "--teacher")]
        assert paths and all(path.startswith("$OUT/") for path in paths), argv


def test_every_tour_command_parses():
    """Each `mcd` command of the tour is accepted by its subcommand's argument parser as written."""
    commands = mcd_commands(section(README.read_text(encoding="utf-8"), TOUR_HEADING))
    assert len(commands) >= 9
    for argv in commands:
        try:
            parse_subcommand(argv)
        except SystemExit as exit_:
            pytest.fail(f"`mcd {shlex.join(argv)}` does not parse (exit status {exit_.code})")


def test_the_parse_check_refuses_a_misspelt_flag_and_a_bad_value(capsys):
    """The parse check is not vacuous: a typo in a flag and an out-of-range value are argument errors."""
    assert parse_subcommand(["train", "--out", "$OUT/t", "--minutes", "2"]).minutes == 2
    for argv in (["train", "--out", "$OUT/t", "--minuts", "2"], ["eval", "--ckpt", "$OUT/t", "--num", "1"],
                 ["distill", "--teacher", "a", "--out", "b", "--steps-per-round", "0"]):
        with pytest.raises(SystemExit):
            parse_subcommand(argv)
    capsys.readouterr()


def test_mcd_commands_extraction_joins_continued_lines_and_drops_comments():
    text = "```bash\nOUT=$(mktemp -d)\nmcd train --out $OUT/t \\\n    --minutes 2   # a comment\necho mcd\n```\n"
    assert mcd_commands(text) == [["train", "--out", "$OUT/t", "--minutes", "2"]]


def user_documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; keep it under {README_MAX_BYTES} (move detail to docs/)"


def test_user_documents_carry_no_project_bookkeeping():
    assert len(user_documents()) >= 3  # README, docs/reference.md, docs/results.md
    found = []
    for path in user_documents():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:100]}"
                      for what, pattern in BOOKKEEPING.items() if pattern.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("line", ["see issue 11 for the goal", "Issue #23 asks", "new in this round",
                                  "the run predates commit 4665366", "fixed in cdc4411."])
def test_the_bookkeeping_patterns_catch_what_they_name(line):
    assert any(pattern.search(line) for pattern in BOOKKEEPING.values()), line


@pytest.mark.parametrize("line", ["10 423 steps at 17 steps/s", "1.04 × 10⁸ draws, 1234567 tokens", "a deadbeef value",
                                  "the rounds of distillation", "`bench_pr_<steps>.png`"])
def test_the_bookkeeping_patterns_spare_ordinary_text(line):
    assert not any(pattern.search(line) for pattern in BOOKKEEPING.values()), line
