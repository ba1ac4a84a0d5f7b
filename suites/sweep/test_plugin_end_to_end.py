"""A plugin implementation and a plugin meter, each one file plus one registry line, reach the record, the
report's tables and its figures through a real sweep, without any other module knowing them."""

from __future__ import annotations

import pytest
from testkit import plugin_impl, plugin_meter

from fastformer_bench import impls, measure
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.report import build_report, figures
from fastformer_bench.results import read_points
from fastformer_bench.runner import run_sweep

FAST = Settings(warmup_s=0.01, min_time_s=0.02, min_samples=3, max_samples=5, time_limit_s=60, count_flops=False)
NS = (16, 32, 64)


def test_plugin_implementation_and_meter_reach_record_table_and_figure(tmp_path, monkeypatch):
    drawn: dict[str, list[str]] = {}
    save = figures.save

    def capture(fig, directory, name, title, kind):
        drawn[name] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        return save(fig, directory, name, title, kind)

    monkeypatch.setattr(figures, "save", capture)
    with impls.registered(plugin_impl.MIRROR), measure.registered(plugin_meter.METER):
        problems = [Problem(impl, batch=1, seq_len=n, width=16, heads=2) for impl in ("test_mirror", "eager")
                    for n in NS]
        run_sweep(problems, FAST, tmp_path / "results", preset="plugins", progress=False)
    assert "test_mirror" not in impls.names() and "test_op_outputs" not in measure.names()  # the blocks ended

    records = {(r["impl"], r["seq_len"]): r for r in read_points(tmp_path / "results" / "points.jsonl")}
    mirror = records[("test_mirror", 32)]
    assert mirror["status"] == "ok", mirror["reason"]
    # the implementation's facts travel in its record; the meter's field and what the report shows of it too
    assert (mirror["complexity"], mirror["expected_exponent"], mirror["display_order"]) == \
        ("linear", [0.8, 1.2], len(impls.names()))
    assert mirror["op_outputs"] > 0 and mirror["quantities"]["op_outputs"]["label"] == "op outputs per call"

    summary = build_report([str(tmp_path / "results")], str(tmp_path / "report"))
    text = (tmp_path / "report" / "REPORT.md").read_text()
    fits = text.split("### Time exponent in N")[1].split("###")[0]
    assert "| test_mirror " in fits
    meter_table = text.split("### op outputs per call (op_outputs) by N")[1].split("##")[0]
    assert "| test_mirror " in meter_table and "per token" in meter_table
    time_figures = [labels for name, labels in drawn.items() if name.startswith("time_vs_n-")]
    assert time_figures and all("test_mirror" in labels for labels in time_figures)
    meter_figures = [labels for name, labels in drawn.items() if name.startswith("op_outputs_vs_n-")]
    assert meter_figures and all({"test_mirror", "eager"} <= set(labels) for labels in meter_figures)
    assert any(e["file"] and "op_outputs_vs_n-" in e["file"] for e in summary["figures"])


def test_a_meter_that_writes_an_undeclared_field_fails_the_point_loudly():
    with measure.registered(plugin_meter.SLOPPY):
        record = measure_point(Problem("eager", batch=1, seq_len=8, width=8, heads=2), FAST)
    assert record["status"] == "error" and "undeclared" in record["reason"]
    assert "undeclared" not in record


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        with impls.registered(plugin_impl.MIRROR, plugin_impl.MIRROR):
            pass
    with pytest.raises(ValueError, match="already registered"):
        with measure.registered(measure.get("time")):
            pass
