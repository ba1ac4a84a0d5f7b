"""Every figure is written and readable as PNG; absent data is skipped, not drawn; output is reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_synthetic import synthetic_records, write_results

from fastformer_bench.report import build_report, figures
from fastformer_bench.report.markdown import FIGURE_SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    results = write_results(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("report")
    return results, out, build_report([str(results)], str(out))


def test_every_figure_kind_is_written(built):
    _results, out, summary = built
    entries = summary["figures"]
    assert {e["kind"] for e in entries} == set(figures.KINDS) == set(FIGURE_SECTIONS)
    assert all(e["file"] for e in entries), [e for e in entries if not e["file"]]
    written = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert written == sorted(Path(e["file"]).name for e in entries)
    for name in written:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_report_links_every_figure_and_leads_with_conclusions(built):
    _results, out, summary = built
    text = (out / "REPORT.md").read_text()
    for e in summary["figures"]:
        assert f"]({e['file']})" in text
    assert text.index("## Environment") < text.index("## Conclusions") < text.index("## Figures") \
        < text.index("## Tables") < text.index("## Conventions and caveats")
    assert "eager time grows as N^1.00" in text
    assert "**Target not met:** compiled" in text  # the synthetic compiled curve carries a fixed overhead
    assert json.loads((out / "summary.json").read_text()) == summary


def test_regeneration_is_byte_identical(built):
    results, out, _summary = built
    before = {name: (out / name).read_bytes() for name in ("REPORT.md", "summary.json")}
    (out / "figures" / "stale-from-an-older-report.png").write_bytes(PNG)
    build_report([str(results)], str(out))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not (out / "figures" / "stale-from-an-older-report.png").exists()


def test_absent_data_is_skipped_and_said(tmp_path):
    # Forward core points of one linear implementation only: no softmax, no layer, no backward, one C.
    records = [r for r in synthetic_records()
               if r["impl"] == "eager" and r["mode"] == "fwd" and r["scope"] == "core" and r["columns"] == 3]
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    skipped = {e["kind"] for e in summary["figures"] if e["file"] is None}
    assert skipped == {"speedup_vs_sdpa", "columns", "token_budget", "fwd_vs_fwd_bwd"}
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert text.count("_Skipped: ") == len(skipped)
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == len(summary["figures"]) - len(skipped)


def test_no_ok_points_gives_a_report_without_figures(tmp_path):
    records = [{**r, "status": "oom", "time_median": None, "peak_bytes": None}
               for r in synthetic_records()[:12]]
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    assert summary["time_fits"] == [] and not list((tmp_path / "out" / "figures").glob("*.png"))
    assert "_Skipped: " in (tmp_path / "out" / "REPORT.md").read_text()


def test_colours_are_fixed_per_implementation():
    assert figures.colour("eager") == figures.PALETTE["eager"]
    assert len(set(figures.PALETTE.values())) == len(figures.PALETTE)
    assert figures.colour("someone_new") == figures.colour("someone_new")  # stable across calls and processes
    assert figures.impl_order(["zeta", "softmax_sdpa", "eager"]) == ["eager", "softmax_sdpa", "zeta"]
