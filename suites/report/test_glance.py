"""README.md's "Results at a glance" is what the committed reports say, as scripts/readme_glance.py writes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastformer_bench.report import glance
from fastformer_bench.report.decision import setting
from fastformer_bench.report.sections.decision import above_roof, plain_cell

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_block_is_what_the_committed_reports_say():
    assert glance.current(ROOT) == glance.block(ROOT), "README.md is stale: run python scripts/readme_glance.py"


def test_the_block_carries_each_setting_its_conditions_and_footnotes():
    text = glance.block(ROOT)
    speed = [s for _, s in glance.summaries(ROOT) if "baselines" in s and s.get("decision")]
    rows = [r for s in speed for r in s["decision"]]
    table = [line for line in text.splitlines() if line.startswith("| ") and "device" not in line]
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        assert f"`{row['fastest']['impl']}`" in line and f"{row['batch']}, {row['width']}, {row['heads']}" in line
        # "fastest" of one: a setting where only one additive implementation ran says so
        assert ("(the only one run)" in line) == (row["candidates"] == 1)
        # a CPU row quotes its plain-process figure beside the warm heap's (or says it was not measured)
        assert (plain_cell(row) in line) if row["device"] == "cpu" else ("| –" in line)
    high = [(name, r) for name, s in glance.summaries(ROOT) if s in speed for r in s["decision"]
            if r["roof"] and above_roof(r)]
    # a share above 100 % says why, naming the setting and the report it is in (settings repeat across reports)
    named = [note.split(", because")[0] for note in text.split(" Above 100 % in ")[1:]]
    assert all(any(f"{setting(r)} ({name})" in note for note in named) for name, r in high)
    assert len(named) <= len(high)
    assert "allocator condition `warm`" in text
    for s in speed:
        env = s["environment"][0]
        assert str(env["git_commit"])[:7] in text and str(env["started_at"])[:10] in text


def test_write_readme_rewrites_only_the_block(tmp_path):
    (tmp_path / "reports").mkdir()
    for name in ("cpu", "probe"):
        if (ROOT / "reports" / name / "summary.json").exists():
            (tmp_path / "reports" / name).mkdir()
            shutil.copy(ROOT / "reports" / name / "summary.json", tmp_path / "reports" / name)
    (tmp_path / "README.md").write_text(f"# title\n\nbefore\n{glance.START}\nhand-written\n{glance.END}\nafter\n")
    assert glance.write_readme(tmp_path) and not glance.write_readme(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# title\n\nbefore\n<!-- glance:start -->\nThe fastest additive implementation")
    assert text.endswith("<!-- glance:end -->\nafter\n") and "hand-written" not in text
    assert "](reports/cpu/REPORT.md)" in text and "gpu-check" not in text


def test_a_readme_without_its_markers_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("no block here\n")
    with pytest.raises(ValueError, match="glance:start"):
        glance.write_readme(tmp_path)


def test_the_date_comes_from_the_run_id_where_run_json_has_no_start():
    assert glance.run_date({"started_at": "2026-12-05T04:11:47Z", "run_id": "cpu-20261204T000000Z"}) == "2026-12-05"
    assert glance.run_date({"run_id": "probe-20261203T133215Z"}) == "2026-12-03"
    assert glance.run_date({}) is None
