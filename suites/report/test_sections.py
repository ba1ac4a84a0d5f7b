"""The report's layout: each analysis owns its summary keys, and no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

from testkit.synthetic_results import write_results

from fastformer_bench.report import analysis, load, sections

PACKAGE = Path(__file__).resolve().parents[2] / "fastformer_bench"


def test_each_analysis_gives_summary_keys_of_its_own(tmp_path):
    frame, _runs = load([str(write_results(tmp_path / "results"))])
    facts = analysis.impl_facts(frame)
    given = [set(section.summarize(frame, facts)) for section in sections.ANALYSES]
    every = [key for keys in given for key in keys]
    assert len(every) == len(set(every)), "two analyses write the same summary key: one would hide the other"
    assert set(every) == set(sections.summarize(frame))


def test_no_module_of_the_report_or_the_history_imports_a_private_name():
    found = []
    for path in sorted([*(PACKAGE / "report").rglob("*.py"), *(PACKAGE / "history").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(PACKAGE)}: {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and alias.name != "__future__"]
    assert not found, found
