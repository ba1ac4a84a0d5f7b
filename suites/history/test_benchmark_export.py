"""The series CI publishes with github-action-benchmark beside time: peak memory (smaller is better) and GFLOP/s
(bigger is better, a file of its own: the action takes one tool per file), from fastformer_bench/export.py."""

from __future__ import annotations

import json

import pytest
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench import export


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / "results", synthetic_records(), {**run_env(), "git_commit": "abc123"})


def _timed(records):
    return [r for r in records if export.samples_of(r) is not None]


def test_peak_memory_is_one_entry_per_timed_point_in_mb(results):
    text, summary = export.render(results, "github-action-benchmark-memory")
    entries, timed = json.loads(text), [r for r in _timed(synthetic_records()) if r.get("peak_bytes")]
    assert [e["name"] for e in entries] == [name for _, name in export.named_points(timed)]
    for entry, record in zip(entries, timed):
        assert entry["unit"] == "MB" and entry["value"] == pytest.approx(record["peak_bytes"] / 1e6)
        assert "range" not in entry and "peak memory" in entry["extra"] and "abc123" in entry["extra"]
    assert "github-action-benchmark-memory" in summary


def test_gflops_is_flops_over_the_median_with_the_band_as_its_range(results):
    entries = json.loads(export.render(results, "github-action-benchmark-gflops")[0])
    timed = [r for r in _timed(synthetic_records()) if r.get("flops")]
    assert len(entries) == len(timed)
    for entry, record in zip(entries, timed):
        assert entry["unit"] == "GFLOP/s"
        assert entry["value"] == pytest.approx(record["flops"] / record["time_median"] / 1e9)
        half = (record["flops"] / record["time_p20"] - record["flops"] / record["time_p80"]) / 2e9
        assert float(entry["range"].removeprefix("± ")) == pytest.approx(half, rel=1e-5)


def test_a_run_without_the_series_is_refused_in_one_sentence(tmp_path):
    records = [{**r, "peak_bytes": None, "flops": None} for r in synthetic_records()]
    bare = write_results(tmp_path / "bare", records, run_env())
    for fmt, what in (("github-action-benchmark-memory", "peak memory"), ("github-action-benchmark-gflops", "FLOP")):
        with pytest.raises(ValueError, match=what):
            export.render(bare, fmt)
