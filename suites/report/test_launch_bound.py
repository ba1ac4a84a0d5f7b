"""The report keeps graph- and launch-timed CUDA points apart (timing and cache are slice keys), flags a point
launch-bound where its launch time is more than 1.5x its graph time, and says so in the findings and the speedup
table; a report of CPU records alone has none of it (the committed reports stay byte-identical)."""

from __future__ import annotations

import json

import pytest
from testkit.synthetic_results import SEQ_LENS, synthetic_records, write_results

from fastformer_bench.report import analysis, build_report, load
from fastformer_bench.report.sections import launch

#: the launch-timed time over the graph-timed one: launch-bound below N = 128 (and eager at the largest N, where
#: the speedup table compares), within the limit elsewhere
SLOW_LAUNCH, FAST_LAUNCH = 3.0, 1.1


def _bound(impl: str, n: int) -> bool:
    return n < 128 or (impl == "eager" and n == max(SEQ_LENS))


def _cuda(record: dict, timing: str, factor: float = 1.0) -> dict:
    t = record["time_median"]
    scaled = None if t is None else t * factor
    return {**record, "device": "cuda", "device_name": "Synthetic GPU", "dtype": "bfloat16", "threads": None,
            "timing": timing, "cache": "warm", "timing_method": timing,
            "point_id": f"{record['point_id']}-{timing}", "time_median": scaled,
            "time_p20": None if t is None else 0.99 * scaled, "time_p80": None if t is None else 1.01 * scaled,
            "samples": None if t is None else [scaled] * 3}


def cuda_records() -> list[dict]:
    """The synthetic CPU points at width 64, fwd, core, B = 2, C = 3, also on a GPU timed both ways."""
    chosen = [r for r in synthetic_records() if r["width"] == 64 and r["mode"] == "fwd" and r["scope"] == "core"
              and r["columns"] == 3 and r["batch"] == 2 and r["impl"] in ("eager", "softmax_sdpa")
              and r["status"] == "ok"]
    out = []
    for r in chosen:
        out.append(_cuda(r, "graph"))
        out.append(_cuda(r, "launch", SLOW_LAUNCH if _bound(r["impl"], r["seq_len"]) else FAST_LAUNCH))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    results = write_results(root / "results", synthetic_records() + cuda_records())
    summary = build_report([str(results)], str(root / "report"))
    return summary, (root / "report" / "REPORT.md").read_text(), root / "report"


def test_graph_and_launch_points_are_separate_slices(tmp_path):
    frame, _ = load([str(write_results(tmp_path, synthetic_records() + cuda_records()))])
    assert {"timing", "cache"} <= set(analysis.SLICE)
    cpu = frame[frame["device"] == "cpu"]
    assert set(cpu["timing"]) == {analysis.UNTIMED} and set(cpu["cache"]) == {analysis.UNTIMED}
    groups = frame[frame["device"] == "cuda"].groupby(analysis.SLICE + ["impl", "seq_len"]).size()
    assert (groups == 1).all()  # one point per slice, implementation and N: never a graph and a launch time mixed
    fits = analysis.scaling_fits(frame, "time")
    cuda = [f for f in fits if f["device"] == "cuda"]
    assert {f["timing"] for f in cuda} == {"graph", "launch"}  # one fit per method, never one over both
    assert all("timing" not in f for f in fits if f["device"] == "cpu")


def test_a_point_whose_launch_time_is_over_1_5x_its_graph_time_is_launch_bound(report):
    summary, _, _ = report
    rows = summary["launch_bound"]
    assert {(r["impl"], r["seq_len"]) for r in rows} == {(i, n) for i in ("eager", "softmax_sdpa") for n in SEQ_LENS}
    for r in rows:
        assert r["launch_bound"] == _bound(r["impl"], r["seq_len"])
        expected = SLOW_LAUNCH if _bound(r["impl"], r["seq_len"]) else FAST_LAUNCH
        assert r["launch_over_graph"] == pytest.approx(expected, rel=1e-3)
        assert r["cache"] == "warm" and "timing" not in r and r["device"] == "cuda"


def test_the_findings_and_the_speedup_table_say_which_points_are_launch_bound(report):
    summary, text, out = report
    assert "### Launch timing" in text
    sentence = next(line for line in text.splitlines() if line.startswith("- Launch-bound ("))
    assert "eager N = 16 (3.00×)" in sentence and "softmax_sdpa N = 64 (3.00×)" in sentence
    assert "eager N = 2,048 (3.00×)" in sentence and "softmax_sdpa N = 2,048" not in sentence
    assert "N = 128" not in sentence and "more than 1.5x its CUDA-graph time" in sentence
    assert "### Launch timing against CUDA-graph timing" in text
    speedup = text.split("### Speedup over softmax baselines at fixed N", 1)[1].split("###", 1)[0]
    header = next(line for line in speedup.splitlines() if line.startswith("|"))
    assert "launch-bound" in header
    launch_rows = [line for line in speedup.splitlines() if "launch timing" in line]
    graph_rows = [line for line in speedup.splitlines() if "graph timing" in line]
    assert launch_rows and graph_rows  # the two methods never share a speedup row
    assert all(line.rstrip(" |").endswith("-") for line in graph_rows)
    # at the largest N both ran (2,048) eager is launch-bound, SDPA is not: the launch row names eager alone
    assert [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in launch_rows] == ["eager"]
    # the figures of each method are drawn apart, and named by it
    names = [p.name for p in (out / "figures").glob("*.png")]
    assert any("-launch-warm-" in n for n in names) and any("-graph-warm-" in n for n in names)
    json.dumps(summary)


def test_a_report_of_cpu_records_alone_has_no_launch_or_method_keys(tmp_path):
    results = write_results(tmp_path / "results")
    summary = build_report([str(results)], str(tmp_path / "report"))
    assert "launch_bound" not in summary
    text = json.dumps(summary)
    assert '"timing"' not in text and '"cache"' not in text
    assert "Launch" not in (tmp_path / "report" / "REPORT.md").read_text()


def test_bound_at_needs_a_launch_timed_row():
    s = {"launch_bound": [{"impl": "eager", "seq_len": 16, "launch_bound": True, "device": "cuda",
                           "cache": "warm"}]}
    assert launch.bound_at(s, {"timing": "launch", "device": "cuda", "cache": "warm"}, "eager", 16)
    assert not launch.bound_at(s, {"timing": "graph", "device": "cuda", "cache": "warm"}, "eager", 16)
    assert not launch.bound_at(s, {"timing": "launch", "device": "cuda", "cache": "warm"}, "eager", 32)


def test_the_decision_names_each_method_and_the_answer_how_its_times_were_taken(report):
    from fastformer_bench.report.decision import TIMING_WORDS, setting

    summary, text, _ = report
    cuda = [r for r in summary["decision"] if r["device"] == "cuda"]
    assert sorted(r["timing_method"] for r in cuda) == ["graph", "launch"]
    # one dtype and mode timed two ways are two settings, and read as two
    assert sorted(setting(r) for r in cuda) == ["GPU bfloat16 fwd, CUDA-graph timing, warm L2",
                                                "GPU bfloat16 fwd, launch timing, warm L2"]
    answer = text.split("## Answer\n\n", 1)[1].split("\n", 1)[0]
    assert f"{TIMING_WORDS['graph']} in bfloat16 fwd, CUDA-graph timing, warm L2" in answer
    assert f"{TIMING_WORDS['launch']} in bfloat16 fwd, launch timing, warm L2" in answer


def test_a_run_of_one_implementation_is_not_called_the_fastest(tmp_path):
    records = [r for r in synthetic_records() if r["impl"] == "eager"]
    results = write_results(tmp_path / "results", records)
    build_report([str(results)], str(tmp_path / "report"))
    text = (tmp_path / "report" / "REPORT.md").read_text()
    answer = text.split("## Answer\n\n", 1)[1].split("\n", 1)[0]
    assert "`eager` is the only additive implementation run in" in answer
    assert "fastest additive" not in answer
