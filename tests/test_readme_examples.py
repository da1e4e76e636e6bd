"""Every ```python block of README.md runs, as written, so the documentation cannot rot (issue 13).

The blocks run in order in one shared namespace (a later block may use an earlier block's names, as a
reader running them in one session would), in a fresh temporary working directory (they write runs/...).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block, in order."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_extraction_finds_every_python_fence():
    """The extractor is not vacuous: it finds as many blocks as there are ```python fences, and the
    "Use it from Python" section holds the three library examples (trained run, own module, distillation)."""
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) == len(re.findall(r"^```python", text, re.MULTILINE)) >= 4
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    library = python_blocks(section)
    assert len(library) >= 3
    code = "\n".join(body for _, body in library)
    for name in ("sampler.load_run", "sampler.sample(", "sampler.ModuleDenoiser", "sampler.distill_module",
                 "sampler.sample_quality", "sampler.distill_run"):
        assert name in code, name


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for line, code in python_blocks(README.read_text(encoding="utf-8")):
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102  (a traceback names the block's line)
