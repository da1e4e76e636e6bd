"""The import structure of `sampler/`: no import cycle, counting imports inside functions too, and imports
inside functions only of the heavy optional dependencies.

Every module is parsed (not imported) and its imports resolved to project modules: `from a import b` names
the module a.b when it exists, else a.  Blocks under `if TYPE_CHECKING:` never run and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sampler", "theory", "duality")
# third-party modules a function may import on first use, each for a reason:
LAZY_ALLOWED = {
    "transformers": "heavy and optional (the `text` extra): the evaluator LM only",
    "tokenizers": "optional (the `text` extra): real-text sources only",
    "safetensors": "imported by the commands that read or write a checkpoint, not by `import sampler`",
    "matplotlib": "heavy and optional: the bench's plots only",
    "gguf": "optional (the `text` extra): transformers needs it to read the GGUF evaluator",
}


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.AST, bool]]:
    """(import node, inside a function) for every import that can run, TYPE_CHECKING blocks left out."""
    found: list[tuple[ast.AST, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(tree, False)
    return found


def _targets(module: str, is_package: bool, node: ast.AST, known: set[str]) -> list[str]:
    """The modules an import statement names (project modules, or the top-level name of a third-party one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """({module: project modules it imports}, [(module, third-party or project module) imported in a function]);
    a function-level import of a module in LAZY_ALLOWED without a comment (its reason) on its line is recorded as
    (module, "<no reason> target")."""
    files = module_files()
    known = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    lazy: list[tuple[str, str]] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, in_function in _imports(tree):
            for target in _targets(name, path.name == "__init__.py", node, known):
                if target.split(".")[0] in PACKAGES:
                    graph[name].add(target)
                if in_function and target.split(".")[0] != "__future__":
                    line = path.read_text().splitlines()[node.lineno - 1]
                    reasoned = "#" in line or target.split(".")[0] not in LAZY_ALLOWED
                    lazy.append((name, target if reasoned else f"<no reason> {target}"))
    return graph, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle_even_inside_functions():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_imports_inside_functions_are_only_the_heavy_optional_dependencies():
    _, lazy = import_graph()
    refused = sorted({(module, target) for module, target in lazy
                      if module.startswith("sampler") and target.split(".")[0] not in LAZY_ALLOWED})
    assert not refused, "\n".join(f"{module}: import {target} inside a function" for module, target in refused)


def test_the_core_imports_no_feature_or_command_back_end():
    """The modules at the top of sampler/ (the core library) import no feature folder and no back-end; the
    public face (sampler/__init__, api) is the exception that opens runs for its users."""
    graph, _ = import_graph()
    upstairs = ("sampler.shadow", "sampler.run", "sampler.cli", "sampler.quality", "sampler.train")
    files = module_files()
    core = {name for name in graph if name.count(".") == 1 and files[name].name != "__init__.py" and name != "sampler.api"}
    # a folder's modules, not its name's prefix (sampler.rundir is a core module, not part of sampler.run)
    refused = sorted((m, t) for m in core for t in graph[m] if any(t == up or t.startswith(up + ".") for up in upstairs))
    assert not refused, refused


def test_the_checker_finds_a_planted_cycle_and_a_planted_lazy_import():
    """The checks above can fail: a two-module circle and a function-level project import are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from .x import y\nif TYPE_CHECKING:\n    import z\n")
    found = _imports(tree)
    assert [(type(n).__name__, inside) for n, inside in found] == [("ImportFrom", True)]
    assert _targets("p.m", False, found[0][0], {"p.x", "p.x.y"}) == ["p.x.y"]
