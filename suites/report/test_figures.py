"""Every figure is written and readable as PNG; absent data is skipped, not drawn; output is reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit.synthetic_results import synthetic_records, write_results

from fastformer_bench.report import build_report, plotting, spec

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    results = write_results(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("report")
    return results, out, build_report([str(results)], str(out))


def _spec_of(kind: str) -> spec.FigureSpec:
    (found,) = [s for s in spec.HEADLINES + spec.SPECS if s.owns(kind)]
    return found


def test_every_figure_kind_is_written(built):
    _results, out, summary = built
    entries = summary["figures"]
    # every spec but the optional one (no synthetic record measured a shown quantity) drew, under its own kind
    assert {_spec_of(e["kind"]).kind for e in entries} == \
        {s.kind for s in spec.HEADLINES + spec.SPECS if not s.optional}
    assert all(e["file"] for e in entries), [e for e in entries if not e["file"]]
    # the heatmap's kind and files are named after the primary baseline the records carry, less its family
    assert {e["kind"] for e in entries if _spec_of(e["kind"]) is spec.SPEEDUP} == {"speedup_vs_sdpa"}
    written = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert written == sorted(Path(e["file"]).name for e in entries)
    for name in written:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_report_links_every_figure_and_leads_with_the_decision(built):
    _results, out, summary = built
    text = (out / "REPORT.md").read_text()
    for e in summary["figures"]:
        assert text.count(f"]({e['file']})") == 1, e["file"]  # a headline figure is not repeated among the rest
    assert text.startswith("# CPU synthetic run: additive vs softmax attention on Synthetic CPU\n")
    assert text.index("## Answer") < text.index("## Decision") < text.index("](figures/decision_time.png)") \
        < text.index("## Findings") < text.index("## Figures") < text.index("## Tables") \
        < text.index("## Conventions and caveats") < text.index("## Environment")
    # the answer's sentences, with the numbers of the decision's one row, then the allocator condition its CPU
    # times were read in (this run measured no plain process, and says so)
    answer = text.split("## Answer\n\n")[1].split("\n")[0]
    assert answer.count(". ") == 3 and "`eager`" in answer and "softmax_sdpa" in answer
    assert "allocator condition `warm`" in answer and "measured no plain process" in answer
    # synthetic times: compiled = 5e-7·N + 2e-4 s beats eager = 1e-6·N s past N = 400, and sdpa = 1e-8·N² s
    # from N ≈ 170 on (the fixed 2e-4 s and the wobble move it from 100); each times (D/64)
    fwd, fwd_bwd = summary["decision"]
    assert (fwd["mode"], fwd["n"], fwd["width"]) == ("fwd", 2048, 64)
    assert fwd["fastest"]["impl"] == "compiled" and fwd["runner_up"]["impl"] == "eager"
    assert fwd["runner_up"]["ratio"] == pytest.approx(2048e-6 / (5e-7 * 2048 + 2e-4), rel=0.03)
    sdpa, naive = fwd["versus"]
    assert (sdpa["baseline"], naive["baseline"]) == ("softmax_sdpa", "softmax_naive")
    assert sdpa["outcome"] == "crossed" and 100 < sdpa["crossover_n"] < 256 and sdpa["largest_n"] == 2048
    assert sdpa["speedup"] is None and sdpa["status_at_n"] == "not measured"  # no point at N = 8192
    assert fwd_bwd["fastest"]["impl"] == "eager" and fwd_bwd["runner_up"] is None and fwd["roof"] is None
    assert "`compiled` 1.22 ms at N = 2,048" in text and "faster from N ≈ 1" in text
    # one section per spec, in spec order; the optional one (no quantity measured) is absent, not empty
    titles = [f"### {s.title.format(baseline='softmax_sdpa')}\n" for s in spec.SPECS if not s.optional]
    assert [text.index(t) for t in titles] == sorted(text.index(t) for t in titles)
    assert "### Speedup over softmax_sdpa\n" in text and "t(softmax_sdpa) / t(impl)" in text
    assert spec.QUANTITIES.title not in text and "by N\n" not in text
    assert "eager time grows as N^1.00" in text
    assert_no_empty_heading(text)
    # the synthetic compiled curve carries a fixed overhead: N^0.63 over N = 256-2048, but its 95 % interval
    # [0.43, 0.84] reaches 0.8, so it is a caveat, not a miss
    assert "**Target not met:**" not in text
    caveats = text.split("### Caveats\n")[1].split("###")[0]
    assert caveats.count("- compiled ") == 2 and "cannot tell a miss: more N, further out, would tell" in caveats
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
    skipped = {e["kind"]: e["skipped"] for e in summary["figures"] if e["file"] is None}
    # no record names a baseline: the heatmap is skipped under a generic name, and says why
    assert set(skipped) == {"speedup_vs_baseline", "columns", "token_budget", "fwd_vs_fwd_bwd"}
    assert skipped["speedup_vs_baseline"] == "no additive point has a matching baseline point"
    assert summary["baselines"] == [] and summary["crossovers"] == []
    text = (tmp_path / "out" / "REPORT.md").read_text()
    # no heading for a figure that is not there: one line names each, and why
    assert "### Speedup over baseline\n" not in text and "### Effect of the column count C" not in text
    (line,) = [t for t in text.splitlines() if t.startswith("Not drawn, for want of data: ")]
    assert "Speedup over baseline (no additive point has a matching baseline point)" in line
    assert line.count(" (no ") == len(skipped)
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == len(summary["figures"]) - len(skipped)
    assert_no_empty_heading(text)


def test_no_ok_points_gives_a_report_without_figures(tmp_path):
    records = [{**r, "status": "oom", "time_median": None, "peak_bytes": None}
               for r in synthetic_records()[:12]]
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    assert summary["time_fits"] == [] and not list((tmp_path / "out" / "figures").glob("*.png"))
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "No additive implementation has a timed point" in text and "## Decision" not in text
    assert "Not drawn, for want of data: Time vs N (" in text
    assert_no_empty_heading(text)


def test_a_two_length_run_leads_with_its_answer_and_has_no_empty_heading(tmp_path):
    """The quick preset's shape: every implementation at two N, forward, one width: no fit, no 2^25 point."""
    records = [r for r in synthetic_records() if r["mode"] == "fwd" and r["scope"] == "core" and r["columns"] == 3
               and r["width"] == 256 and r["seq_len"] in (256, 1024)]
    summary = build_report([str(write_results(tmp_path / "results", records))], str(tmp_path / "out"))
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert summary["time_fits"] == [] and summary["memory_fits"] == []
    assert text.index("## Answer") < text.index("## Decision") < text.index("## Findings")
    assert "No implementation was measured at 3 or more N at one shape, so no exponent was fitted." in text
    assert "Peak memory:" not in text and "so the report gives no share of a memory roof" in text
    header = text.split("## Decision")[1].split("\n| ")[1]
    # no value in any row
    assert "share of the memory roof" not in header and "in a plain process" not in header
    assert "at N = 8,192" not in header
    assert_no_empty_heading(text)


def assert_no_empty_heading(text: str) -> None:
    """Every heading has something under it before the next heading of its level or above."""
    lines = [line for line in text.splitlines() if line.strip()]
    for line, after in zip(lines, lines[1:] + ["# (end)"]):
        if line.startswith("#"):
            level, next_level = len(line.split(" ")[0]), len(after.split(" ")[0]) if after.startswith("#") else 99
            assert next_level > level, f"empty heading: {line!r}"


def test_colours_and_order_follow_the_display_order_not_the_name():
    assert len(set(plotting.COLOURS)) == len(plotting.COLOURS) and len(set(plotting.MARKERS)) == len(plotting.MARKERS)
    assert plotting.colour("anything", 1) == plotting.colour("else", 1) == plotting.COLOURS[1]
    # beyond the list, or without an order: an extra colour chosen by name, stable across calls and processes
    assert plotting.colour("someone_new", 7) == plotting.colour("someone_new", None) in plotting._EXTRA_COLOURS
    assert plotting.marker("someone_new", 7) in plotting._EXTRA_MARKERS
    look = plotting.Look({"b": {"display_order": 5}, "a": {"display_order": 1}, "z": {"display_order": None}})
    assert look.order(["zeta", "z", "b", "a"]) == ["a", "b", "z", "zeta"]
    assert look.colour("b") == plotting.COLOURS[5] and look.marker("a") == plotting.MARKERS[1]


def test_the_baseline_tag_is_the_name_less_its_family():
    look = plotting.Look({"fast_one": {"family": "fast", "baseline_rank": 2, "display_order": 0},
                         "softmax_flash": {"family": "softmax", "baseline_rank": 1, "display_order": 1}})
    assert look.words() == {"baseline": "softmax_flash", "baseline_tag": "flash"}
    assert spec.SPEEDUP.owns("speedup_vs_flash") and not spec.SPEEDUP.owns("time_vs_n")
    assert plotting.Look({}).words() == {"baseline": "baseline", "baseline_tag": "baseline"}
