"""A store split in shards (one writer each, DESIGN §4): every reader reads them all, a point once, the first
complete record winning and every duplicate named."""

from __future__ import annotations

import json

import pytest
from report_synthetic import synthetic_records, write_results

from fastformer_bench import results
from fastformer_bench.cluster.shard import split
from fastformer_bench.gate import stored
from fastformer_bench.runner import check_target


def _write(path, records, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records) + tail)


def test_every_point_of_every_shard_is_read_once(tmp_path):
    records = synthetic_records()
    third = len(records) // 3
    write_results(tmp_path, records[:third])
    _write(tmp_path / "points.7_0.jsonl", records[third::2])
    _write(tmp_path / "points.7_1.jsonl", records[third + 1::2])
    unreadable: list[str] = []
    loaded = results.load_records([tmp_path], unreadable)
    assert sorted(r["point_id"] for r in loaded) == sorted(r["point_id"] for r in records)
    assert unreadable == []
    assert len(results.load_frame([tmp_path])) == len(records)
    # the gate's stored baseline and --resume read the same store
    assert len(stored.load(tmp_path)[1]) == len(records)
    assert {r["point_id"] for r in results.read_store(tmp_path)} == {r["point_id"] for r in records}


def test_a_point_in_two_shards_is_kept_once_the_first_in_job_order_wins_and_the_other_is_named(tmp_path, capsys):
    first, *rest = synthetic_records()[:4]
    # job 2_9 precedes job 2_10 (numbers, not text: as text "2_10" sorts first)
    _write(tmp_path / "points.2_10.jsonl", [{**first, "time_median": 2.0}, rest[0]])
    _write(tmp_path / "points.2_9.jsonl", [{**first, "time_median": 1.0}, rest[1]])
    unreadable: list[str] = []
    loaded = results.load_records([tmp_path], unreadable)
    assert [r["time_median"] for r in loaded if r["point_id"] == first["point_id"]] == [1.0]
    assert len(loaded) == 3
    assert len(unreadable) == 1 and "points.2_10.jsonl" in unreadable[0] and first["point_id"] in unreadable[0]
    # a reader that takes no list (run's own table, the gate) still names it, on stderr
    assert len(results.read_store(tmp_path)) == 3
    assert f"point {first['point_id']} is also in points.2_9.jsonl" in capsys.readouterr().err


def test_a_cut_line_of_a_killed_job_is_named_and_the_complete_record_in_a_later_shard_wins(tmp_path):
    a, b = synthetic_records()[:2]
    cut = json.dumps(b, sort_keys=True)[:40]  # the job was killed mid-write
    _write(tmp_path / "points.3_0.jsonl", [a], tail=cut)
    _write(tmp_path / "points.4_0.jsonl", [b])  # the resumed sweep measured it again
    unreadable: list[str] = []
    loaded = results.load_records([tmp_path], unreadable)
    assert sorted(r["point_id"] for r in loaded) == sorted([a["point_id"], b["point_id"]])
    assert len(unreadable) == 1 and "points.3_0.jsonl:2 is cut off" in unreadable[0]


def test_a_directory_of_shards_holds_results_and_an_empty_one_does_not(tmp_path):
    _write(tmp_path / "points.5_0.jsonl", synthetic_records()[:1])
    with pytest.raises(ValueError, match="already holds results"):
        check_target(tmp_path, resume=False)
    check_target(tmp_path, resume=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(results.ResultsError, match="no results"):
        results.load_records([empty])


def test_points_are_dealt_into_non_empty_shards_each_point_once():
    ids = [f"p{i}" for i in range(7)]
    shards = split(ids, 3)
    assert shards == [["p0", "p3", "p6"], ["p1", "p4"], ["p2", "p5"]]
    assert split(ids[:2], 5) == [["p0"], ["p1"]]  # never an empty job
    with pytest.raises(ValueError, match="at least 1"):
        split(ids, 0)
