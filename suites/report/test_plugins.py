"""What records carry reaches the report without the report knowing a name: a made-up implementation with its
facts, energy and a made-up meter quantity each get their tables and figures; without them nothing new appears."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from testkit.synthetic_results import ENERGY_PER_TOKEN_WIDTH, synthetic_records, with_energy, write_results

from fastformer_bench import results
from fastformer_bench.report import build_report, figures, spec

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "made_up_kernel"
PLUGIN_FACTS = {"complexity": "linear", "baseline_rank": None, "expected_exponent": [0.8, 1.2], "display_order": 7}
WIDGETS = {"label": "widgets made", "unit": "wd", "per_token": False}


@pytest.fixture
def drawn(monkeypatch):
    """file name -> (legend labels, visible panel count) of every figure saved while the fixture is active."""
    seen: dict[str, tuple[list[str], int]] = {}
    save = figures.save

    def capture(fig, directory, name, title, kind):
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen[name] = (labels, sum(ax.get_visible() for ax in fig.axes))
        return save(fig, directory, name, title, kind)

    monkeypatch.setattr(figures, "save", capture)
    return seen


def _core_fwd(records: list[dict]) -> list[dict]:
    return [r for r in records if r["mode"] == "fwd" and r["scope"] == "core" and r["columns"] == 3]


def test_a_made_up_implementation_is_fitted_checked_and_drawn(tmp_path, drawn):
    records = _core_fwd(synthetic_records())
    plugin = [{**r, **PLUGIN_FACTS, "impl": PLUGIN, "point_id": f"{PLUGIN}-{r['point_id']}",
               "time_median": r["time_median"] / 2, "time_p20": r["time_p20"] / 2, "time_p80": r["time_p80"] / 2}
              for r in records if r["impl"] == "eager" and r["status"] == "ok"]
    summary = build_report([str(write_results(tmp_path / "results", records + plugin))], str(tmp_path / "out"))
    fits = [f for f in summary["time_fits"] if f["impl"] == PLUGIN]
    assert {f["width"] for f in fits} == {64, 256} and all(f["slope"] == pytest.approx(1.0, abs=0.05) for f in fits)
    targets = [t for t in summary["targets"] if t["impl"] == PLUGIN]
    assert len(targets) == 2 and all(t["target"] == "0.8-1.2" and t["holds"] for t in targets)
    # not a baseline: compared against the baselines, never one itself
    assert {c["baseline"] for c in summary["crossovers"]} == {"softmax_sdpa", "softmax_naive"}
    assert {c["impl"] for c in summary["crossovers"] if c["impl"] == PLUGIN} == {PLUGIN}
    text = (tmp_path / "out" / "REPORT.md").read_text()
    fit_table = text.split("### Time exponent in N")[1].split("###")[0]
    target_table = text.split("### Expected exponents")[1].split("###")[0]
    assert f"| {PLUGIN} " in fit_table and f"| {PLUGIN} " in target_table
    (labels, _panels), = [v for name, v in drawn.items() if name.startswith("time_vs_n-")]
    # legend in display order: the plugin's 7 comes after every registered implementation's
    assert labels == ["reference", "eager", "compiled", "softmax_naive", "softmax_sdpa", PLUGIN]


def test_energy_gets_a_table_and_a_figure_per_call_and_per_token(tmp_path, drawn):
    records = with_energy(synthetic_records())
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    (energy,) = summary["quantities"]
    assert (energy["field"], energy["label"], energy["unit"], energy["per_token"]) == \
        ("energy_j", "energy per call", "J", True)
    ok = [r for r in records if r["status"] == "ok"]
    assert sum(row["points"] for row in energy["rows"]) == len(ok)  # only ok points, each once
    for row in energy["rows"]:
        per_token = ENERGY_PER_TOKEN_WIDTH * row["width"]
        assert row["per_call"] == pytest.approx(per_token * row["batch"] * row["seq_len"], rel=1e-5)
        assert row["per_token"] == pytest.approx(per_token, rel=1e-5)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    table = text.split("### energy per call (energy_j) by N")[1].split("##")[0]
    assert "| energy per call " in table and "| per token " in table and "64 nJ" in table  # 1e-9 J x width 64
    assert f"### {spec.QUANTITIES.title}" in text
    files = [e["file"] for e in summary["figures"] if e["kind"] == spec.QUANTITIES.kind]
    assert files and all(f.startswith("figures/energy_j_vs_n-") for f in files)
    assert all((tmp_path / "out" / f).is_file() and f"]({f})" in text for f in files)
    # two rows of panels (per call, per token) for each (width, heads) facet
    for name in (Path(f).stem for f in files):
        labels, panels = drawn[name]
        assert panels % 2 == 0 and panels >= 2 and "eager" in labels


def test_a_made_up_meter_quantity_is_shown_without_a_per_token_column(tmp_path, drawn):
    records = []
    for r in synthetic_records():
        if r["impl"] == "eager" and r["mode"] == "fwd" and r["scope"] == "core":
            # the incorrect point measured widgets too: it must still not be shown
            r = {**r, "widgets": 3.0 * r["seq_len"], "quantities": {"widgets": dict(WIDGETS)}}
        records.append(r)
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    (widgets,) = summary["quantities"]
    assert widgets["field"] == "widgets" and not widgets["per_token"]
    assert all("per_token" not in row and row["per_call"] == 3.0 * row["seq_len"] for row in widgets["rows"])
    assert max(row["seq_len"] for row in widgets["rows"]) < max(r["seq_len"] for r in records if "widgets" in r)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    table = text.split("### widgets made (widgets) by N")[1].split("##")[0]
    assert "| widgets made " in table and "per token" not in table and "6.14 kwd" in table  # 3 x N = 2048
    files = [Path(e["file"]).stem for e in summary["figures"] if e["kind"] == spec.QUANTITIES.kind]
    assert files and all(name.startswith("widgets_vs_n-") for name in files)
    assert all(drawn[name][0] == ["eager"] for name in files)  # one row of panels, eager's line only


def test_a_quantity_declared_without_a_value_is_not_shown(tmp_path):
    records = [{**r, "quantities": {"energy_j": {"label": "energy per call", "unit": "J", "per_token": True}}}
               for r in _core_fwd(synthetic_records())]  # energy_j stays None everywhere
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    assert "quantities" not in summary
    assert spec.QUANTITIES.title not in (tmp_path / "out" / "REPORT.md").read_text()


def _literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_report_and_the_record_contract_name_no_implementation():
    names = set(json.loads(results.SCHEMA1_FACTS.read_text())["impls"])
    sources = [ROOT / "fastformer_bench" / "results.py", *sorted((ROOT / "fastformer_bench" / "report").rglob("*.py"))]
    found = [(path.name, line, value) for path in sources for line, value in _literals(path) if value in names]
    # the one exception: run.json's key for the version of the triton *package*, a fact about the environment
    from fastformer_bench.report import markdown

    assert [(name, value) for name, _line, value in found] == [("markdown.py", "triton")]
    assert "triton" in markdown.ENV_KEYS
