"""The house's rules, read from the source: no import cycle (imports inside functions
count), the run directory's file names spelled only by :mod:`taskpgm.rundir`, the base
model built only by ``Base.from_config``, and the torch-free modules free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "taskpgm"
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every taskpgm module ``path`` imports, at any depth of the file (functions too)."""
    out: set[str] = set()
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("taskpgm"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("taskpgm"):
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from taskpgm import x`
    return out


def graph() -> dict[str, set[str]]:
    """Module → the taskpgm modules it imports. An edge to one's own enclosing package is
    left out: importing a sibling always runs it, and it may re-export its members."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name
                   and not name.startswith(m + ".")}
            for name, path in files.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search with colours)."""
    colour = dict.fromkeys(edges, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if colour[nxt] == 1:
                return [*stack[stack.index(nxt):], nxt]
            if colour[nxt] == 0 and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if colour[node] == 0 and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_has_no_cycle():
    """Imports inside function bodies are edges too: a lazy import does not hide a cycle."""
    edges = graph()
    assert edges.get("taskpgm.pipeline")  # the graph was read
    found = cycle(edges)
    assert found is None, " -> ".join(found or [])


#: The run directory's names; only rundir.py spells them.
RUN_FILES = ("config.yaml", "stages.json", "weights.json", "methods.json", "counts.json",
             "evaluation.csv", "evaluation_summary.json", "evaluation.md", "report.html",
             "swarm.json")
#: The weights artifact in the cache holds a file of the same name: not the run directory.
ALLOWED = {("taskpgm.readers", "weights.json")}


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                    ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings}


@pytest.mark.parametrize("path", sorted([*PACKAGE.rglob("*.py"), *BENCHMARKS.rglob("*.py")]),
                         ids=lambda p: p.name)
def test_no_run_directory_file_name_outside_rundir(path):
    if path.name == "rundir.py":
        return
    name = module_name(path) if PACKAGE in path.parents else path.stem
    text = string_literals(path)
    spelled = sorted(f for f in RUN_FILES if any(
        s == f or s.endswith("/" + f) for s in text) and (name, f) not in ALLOWED)
    assert not spelled, f"{path.name} names {spelled}: read and write them through RunDir"


def test_the_base_model_is_built_in_one_place():
    """``Base(...)`` is called only by ``Base.from_config`` (models.py) and the tests."""
    callers = []
    for path in [*PACKAGE.rglob("*.py"), *BENCHMARKS.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Base"):
                callers.append(path.name)
    assert callers == [], callers


#: What the math core may import, at any depth: the standard library, numpy, scipy, itself,
#: the error types, the example record it draws from, and threadpoolctl (BLAS threads).
#: No torch, transformers or peft.
CORE_ALLOWED = ("numpy", "scipy", "threadpoolctl", "taskpgm.core", "taskpgm.errors",
                "taskpgm.tasks.schema")


def core_violations(source: str) -> list[str]:
    """The imports of ``source`` the core may not have (third-party or taskpgm outside the
    allowed set; relative imports stay inside the core by construction)."""
    import sys

    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if not any(name == a or name.startswith(a + ".") for a in CORE_ALLOWED):
                bad.append(name)
    return bad


def test_the_core_rule_catches_a_hidden_torch_import():
    assert core_violations("def f():\n    import torch\n") == ["torch"]
    assert core_violations("from taskpgm.models import Base") == ["taskpgm.models"]
    assert core_violations("import math\nimport numpy as np\nfrom taskpgm.core.qp import x") == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_model_library(path):
    bad = core_violations(path.read_text())
    assert not bad, f"core/{path.name} imports {bad}: the core is numpy-only"
