"""The package's shape: no import cycle, implementation names only in impls/, the axes spelled once."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from fastformer_bench import axes, impls, results
from fastformer_bench.problem import Problem

PACKAGE = Path(__file__).resolve().parents[2] / "fastformer_bench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every fastformer_bench module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def test_no_import_cycle_between_modules():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(files)) - {name} for name, path in files.items()}
    # A package's own __init__ re-exporting its submodules is not a cycle of layers: drop parent->child edges.
    graph = {name: {d for d in deps if not d.startswith(name + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(name: str, path: list[str]) -> bool:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle.extend(path[path.index(dep):] + [name, dep] if dep in path else [name, dep])
                return True
            if dep not in state and visit(dep, path + [name]):
                return True
        state[name] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, []):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"
    # the layering the design promises: the report and the results store never reach back to torch's side
    torch_side = {n for n in graph if n.startswith(("fastformer_bench.point", "fastformer_bench.measure",
                                                     "fastformer_bench.impls", "fastformer_bench.runner"))}
    for name in [n for n in graph if n.startswith("fastformer_bench.report") or n == "fastformer_bench.results"]:
        assert not graph[name] & torch_side, f"{name} imports {graph[name] & torch_side}"


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


#: the Triton *library*'s version in the environment record, not the implementation of that name
LIBRARY_NAMES = {"measure/env.py": {"triton"}, "report/markdown.py": {"triton"}}


def test_no_module_outside_impls_names_an_implementation():
    names = set(impls.names())
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        if "impls" in path.relative_to(PACKAGE).parts:
            continue
        named = {text for text in _string_constants(path) if text in names} - LIBRARY_NAMES.get(where, set())
        if named:
            offenders[where] = sorted(named)
    assert not offenders, f"implementation names outside impls/: {offenders}"


def test_the_axes_are_spelled_once():
    # Problem's fields, the record's identity and the CLI all come from the one table.
    assert {f.name for f in dataclasses.fields(Problem)} == set(axes.NAMES)
    record = results.new_record()
    assert set(axes.NAMES) <= set(record)
    from fastformer_bench.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for axis in axes.AXES:
        assert axis.flag in help_text
