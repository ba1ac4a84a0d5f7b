"""`fastformer-bench compare A B` (fastformer_bench/commands/compare.py, gate/runs.py): two synthetic runs with known
sample distributions give the right ratios, intervals and order; a difference between the runs themselves is a
banner, never a refusal; bad input is one line and exit 2; a committed run against itself is 1 everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fastformer_bench import cli
from fastformer_bench.results import new_record

REPO = Path(__file__).resolve().parents[2]
FACTS = {"eager": "linear", "compiled": "linear", "stream": "linear", "softmax_sdpa": "quadratic"}


def _record(impl: str, n: int, samples: list[float] | None, status: str = "ok") -> dict:
    return new_record(run_id="r", point_id=f"{impl}-{n}", impl=impl, family="softmax" if impl.startswith("softmax")
                      else "additive", complexity=FACTS[impl], device="cpu", device_name="AMD EPYC", dtype="float32",
                      mode="fwd", scope="core", threads=1, batch=1, seq_len=n, width=64, heads=2, columns=3,
                      masked=False, seed=0, status=status, reason=None if status == "ok" else f"synthetic {status}",
                      samples=samples, time_median=float(np.median(samples)) if samples else None)


def _draws(center: float, seed: int, n: int = 40) -> list[float]:
    """n per-call times around ``center`` with a 1 % spread (normal, fixed seed)."""
    return list(center * (1 + 0.01 * np.random.default_rng(seed).standard_normal(n)))


def _run(path: Path, records: list[dict], copy_gbs: float = 20.0, cpu_model: str = "AMD EPYC") -> Path:
    path.mkdir()
    (path / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = {"cpu_model": cpu_model, "torch": "2.13.0+cpu", "run_id": path.name, "git_commit": "0123456789ab",
           "copy_bytes_per_s": {"cpu": copy_gbs * 1e9}}
    (path / "run.json").write_text(json.dumps(run))
    return path


SLOW, SAME, INCORRECT, ONLY_B = (f"{impl} cpu float32 fwd B=1 N={n} D=64 H=2 C=3 threads=1"
                                 for impl, n in (("eager", 1024), ("softmax_sdpa", 1024), ("compiled", 1024),
                                                 ("stream", 2048)))


def _pair(tmp_path: Path, copy_b: float = 20.0, cpu_model_b: str = "AMD EPYC") -> tuple[Path, Path]:
    """A: eager ~1 ms, sdpa ~2 ms, compiled incorrect. B: eager 1.25x slower, sdpa unchanged (other draws of the
    same distribution), compiled ok, and a stream point A does not hold."""
    a = _run(tmp_path / "a", [_record("eager", 1024, _draws(1e-3, 1)),
                              _record("softmax_sdpa", 1024, _draws(2e-3, 2)),
                              _record("compiled", 1024, None, status="incorrect")])
    b = _run(tmp_path / "b", [_record("compiled", 1024, _draws(5e-4, 3)),
                              _record("softmax_sdpa", 1024, _draws(2e-3, 4)),
                              _record("eager", 1024, _draws(1.25e-3, 5)),
                              _record("stream", 2048, _draws(4e-4, 6))], copy_gbs=copy_b, cpu_model=cpu_model_b)
    return a, b


def _compare(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, *args: str) -> dict:
    code, out, err = _compare(capsys, *args, "--json", "-")
    assert code == 0, err
    return json.loads(out)  # nothing but the JSON on stdout


def test_ratios_intervals_and_order_of_two_runs_with_known_distributions(tmp_path, capsys):
    report = _json(capsys, *_pair(tmp_path))
    points = {p["label"]: p for p in report["points"]}
    assert [p["label"] for p in report["points"]] == [SLOW, SAME, INCORRECT]  # largest slowdown first
    slow, same, wrong = points[SLOW], points[SAME], points[INCORRECT]
    assert slow["ratio"] == pytest.approx(1.25, abs=0.01) and 1 < slow["ci_low"] < 1.25 < slow["ci_high"]
    assert slow["verdict"] == "slower" and slow["samples_a"] == slow["samples_b"] == 40
    assert same["ratio"] == pytest.approx(1.0, abs=0.01) and same["ci_low"] < 1 < same["ci_high"]
    assert same["verdict"] == "same"
    # not ok in a run: its statuses, never a ratio
    assert (wrong["status_a"], wrong["status_b"], wrong["reason_a"]) == ("incorrect", "ok", "synthetic incorrect")
    assert wrong["ratio"] is None and wrong["ci_low"] is None and wrong["verdict"] is None
    assert report["only_a"] == [] and report["only_b"] == [ONLY_B] and report["banner"] == []


def test_the_json_schema(tmp_path, capsys):
    report = _json(capsys, *_pair(tmp_path))
    assert set(report) == {"a", "b", "banner", "normalized", "bandwidth_ratios", "summary", "method", "points",
                           "only_a", "only_b"}
    assert set(report["a"]) == {"path", "run_id", "git_commit", "started_at", "fingerprint", "hardware",
                                "copy_bytes_per_s"}
    assert report["a"]["copy_bytes_per_s"] == {"cpu": 20e9} and report["bandwidth_ratios"] == {"cpu": 1.0}
    assert set(report["points"][0]) == {
        "label", "axes", "status_a", "status_b", "reason_a", "reason_b", "median_a", "median_b", "samples_a",
        "samples_b", "ratio", "ci_low", "ci_high", "q_value", "verdict", "note", "scaled"}
    assert report["points"][0]["axes"]["impl"] == "eager" and report["points"][0]["axes"]["seq_len"] == 1024
    assert report["summary"].startswith("3 points in both runs, 2 compared (1 slower, 0 faster, 1 the same)")


def test_the_table_is_for_people_and_names_the_unmatched_with_verbose(tmp_path, capsys):
    a, b = _pair(tmp_path)
    code, out, err = _compare(capsys, a, b)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"A: {a} (run a, commit 0123456, cpu copy 20 GB/s)")
    header = next(i for i, line in enumerate(lines) if line.startswith("point "))
    slow, same, wrong = lines[header + 1:header + 4]
    assert slow.startswith(SLOW) and "1 ms  1.25 ms" in slow and "slower" in slow
    assert re.search(r" 1\.2[45]×  +\[1\.2\d, 1\.2\d\]  ", slow)  # the ratio as a factor, its interval [low, high]
    assert same.startswith(SAME) and re.search(r" (0\.99\d|1\.00|1\.01)×  +\[0\.9\d+, 1\.0\d*\]  +same", same)
    assert "incorrect" in wrong and "×" not in wrong and "A incorrect: synthetic incorrect" in wrong
    assert ONLY_B not in out and "--verbose" in out
    code, out, _ = _compare(capsys, a, b, "--verbose")
    assert "only in B (1):" in out and ONLY_B in out


def test_markdown_and_json_files(tmp_path, capsys):
    a, b = _pair(tmp_path)
    markdown, report = tmp_path / "out" / "compare.md", tmp_path / "out" / "compare.json"
    code, out, _ = _compare(capsys, a, b, "--markdown", markdown, "--json", report)
    assert code == 0 and out.startswith("A: ")  # the table still goes to the terminal
    text = markdown.read_text()
    assert "| point | A | B | B/A | 95% interval | verdict | note |" in text
    assert f"| {SLOW} |" in text and "<summary>Only in B: 1 points</summary>" in text and f"- {ONLY_B}" in text
    assert json.loads(report.read_text())["points"][0]["label"] == SLOW


def test_other_copy_bandwidths_are_a_banner_and_normalize_scales_memory_bound_points(tmp_path, capsys):
    a, b = _pair(tmp_path, copy_b=40.0)  # B's machine copied twice as fast: not refused, said
    code, out, _ = _compare(capsys, a, b)
    assert code == 0
    banner = [line for line in out.splitlines() if line.startswith("!! ")]
    assert len(banner) == 1 and "cpu copy bandwidth 20 GB/s in A vs 40 GB/s in B (B/A 2" in banner[0]
    plain = {p["label"]: p for p in _json(capsys, a, b)["points"]}
    scaled = _json(capsys, a, b, "--normalize")
    normalized = {p["label"]: p for p in scaled["points"]}
    assert scaled["normalized"] and scaled["bandwidth_ratios"] == {"cpu": 2.0}
    # eager is linear (memory-bound): its times as if at A's bandwidth, twice as long; sdpa is left alone
    assert normalized[SLOW]["ratio"] == pytest.approx(2 * plain[SLOW]["ratio"]) and normalized[SLOW]["scaled"]
    assert normalized[SAME]["ratio"] == plain[SAME]["ratio"] and not normalized[SAME]["scaled"]
    assert [p["label"] for p in scaled["points"]][:2] == [SLOW, SAME]


def test_another_cpu_generation_under_the_same_name_is_a_banner(tmp_path, capsys):
    a, b = _pair(tmp_path)
    for path, l2 in ((a, 2**20), (b, 2**19)):
        run = json.loads((path / "run.json").read_text())
        (path / "run.json").write_text(json.dumps({**run, "cpu_caches_bytes": {"L1d": 2**15, "L2": l2}}))
    report = _json(capsys, a, b)
    assert len(report["banner"]) == 1
    assert "cpu_caches 'L1d 32 KiB, L2 1 MiB' vs 'L1d 32 KiB, L2 512 KiB'" in report["banner"][0]
    assert report["points"][0]["ratio"] == pytest.approx(1.25, abs=0.01)


def test_another_fingerprint_is_a_banner_not_a_refusal(tmp_path, capsys):
    report = _json(capsys, *_pair(tmp_path, cpu_model_b="Intel Xeon"))
    assert len(report["banner"]) == 1 and "cpu_model 'AMD EPYC' vs 'Intel Xeon'" in report["banner"][0]
    assert report["points"][0]["ratio"] == pytest.approx(1.25, abs=0.01)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    a, b = _pair(tmp_path)
    (tmp_path / "empty").mkdir()
    elsewhere = _run(tmp_path / "elsewhere", [_record("eager", 4096, _draws(4e-3, 7))])
    for args, words in (((a, tmp_path / "missing"), "no results at"), ((tmp_path / "empty", b), "no results at"),
                        ((a, elsewhere), "share no point"), ((a, b, "--json", "-", "--markdown", "-"), "only one of")):
        code, out, err = _compare(capsys, *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and words in err, (args, err)


def test_a_committed_run_against_itself_is_1_everywhere(capsys):
    report = _json(capsys, REPO / "results" / "cpu", REPO / "results" / "cpu")
    assert report["banner"] == [] and report["only_a"] == report["only_b"] == []
    assert len(report["points"]) > 100 and all(p["status_a"] == p["status_b"] == "ok" for p in report["points"])
    assert all(p["ratio"] == 1.0 and p["ci_low"] <= 1 <= p["ci_high"] and p["verdict"] == "same"
               for p in report["points"])
