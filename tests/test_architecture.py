"""The architecture holds: dependencies flow one way, no import cycles, imports at module level.

* ``lint-imports`` (import-linter) checks the contracts in pyproject.toml: the layers allocator ->
  drivers -> harness.binding -> fixtures -> harness.app / benchmarks, the virtual model never
  importing the DbC driver, USB/IP knowing no bench, the benches independent of each other.
* import-linter's layers say nothing about cycles inside one layer: the runtime import graph
  (grimp, import-linter's own graph builder; imports under ``if TYPE_CHECKING:`` left out, they
  never run) must have no strongly connected component of more than one module.
* An import inside a function hides a dependency from both checks and from the reader: each one
  must say on its line or the line above why it is deferred (``# deferred: <the optional or heavy
  dependency>``).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("allocator", "drivers", "harness", "fixtures")
ROOT_PACKAGES = tuple(f"dbc_harness.{folder}" for folder in FOLDERS)


def _lint_imports() -> str:
    installed = Path(sys.executable).parent / "lint-imports"
    found = str(installed) if installed.exists() else shutil.which("lint-imports")
    assert found, "lint-imports not installed: pip install -e '.[test]'"
    return found


def test_import_contracts_hold() -> None:
    out = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert "0 broken" in report and " kept" in report, report


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        # iterative depth-first search: (node, iterator over its successors)
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return sorted(cycles)


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_runtime_import_cycles() -> None:
    graph = grimp.build_graph(
        *ROOT_PACKAGES, include_external_packages=False, exclude_type_checking_imports=True
    )
    modules = graph.modules
    assert len(modules) > 100  # the whole code base, not an empty graph
    edges = {m: graph.find_modules_directly_imported_by(m) for m in modules}
    assert import_cycles(edges) == []


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function body without a ``# deferred:`` comment
    on its line or as the comment line heading its block of imports."""
    source = path.read_text()
    lines = source.splitlines()
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                here = lines[child.lineno - 1]
                above = child.lineno - 2  # the comment may head a block of deferred imports
                while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                    above -= 1
                heading = lines[above].strip() if above >= 0 else ""
                if "# deferred:" not in here and not heading.startswith("# deferred:"):
                    found.append((child.lineno, here.strip()))
            inside = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, in_function or inside)

    visit(ast.parse(source, filename=str(path)), False)
    return found


def test_function_level_import_finder(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n"
        "def f():\n"
        "    import json\n"
        "    # deferred: an optional heavy thing\n"
        "    import numpy\n"
        "    from numpy import linalg\n"
        "    def g():\n"
        "        from x import y  # deferred: x is optional\n"
        "        from z import w\n"
    )
    assert function_level_imports(module) == [(3, "import json"), (9, "from z import w")]


def test_imports_are_at_module_level() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, text in function_level_imports(path)
    ]
    assert offenders == []
