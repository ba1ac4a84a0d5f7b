"""A store split in shards (one writer each, docs/design.md §4.3): every reader reads them all, a point once, the first
complete record winning and every duplicate named."""

from __future__ import annotations

import json

import pytest
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench import report, results
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


def _two_hosts(tmp_path, second_cpu: str, second_l2: int = 2**20) -> list[dict]:
    records = [r for r in synthetic_records() if r["device"] == "cpu"]
    _write(tmp_path / "points.8_0.jsonl", [{**r, "host": "node-a"} for r in records[::2]])
    _write(tmp_path / "points.8_1.jsonl", [{**r, "host": "node-b"} for r in records[1::2]])
    hosts = {"node-a": {"cpu_model": "CPU A", "copy_bytes_per_s": {"cpu": 1e10}, "jobs": [{"job": "8_0"}]},
             "node-b": {"cpu_model": second_cpu, "copy_bytes_per_s": {"cpu": 4e10}, "jobs": [{"job": "8_1"}]}}
    hosts["node-a"]["cpu_caches_bytes"] = {"L2": 2**20, "L3": 2**25}
    hosts["node-b"]["cpu_caches_bytes"] = {"L2": second_l2, "L3": 2**25}
    (tmp_path / "run.json").write_text(json.dumps({**run_env(), "cpu_model": "CPU A", "hosts": hosts}))
    return records


def test_the_report_keeps_the_points_of_different_machines_apart(tmp_path):
    records = _two_hosts(tmp_path, "CPU B")
    frame, runs = report.load([str(tmp_path)])
    assert sorted(frame["device"].unique()) == ["cpu@node-a", "cpu@node-b"]
    assert [r["label"].split(" @ ")[1] for r in runs] == ["node-a", "node-b"]
    assert [r["env"]["cpu_model"] for r in runs] == ["CPU A", "CPU B"]
    # each point is set against its own machine's copy bandwidth (the roofline)
    by_host = dict(zip(frame["device"], frame["copy_bw"]))
    assert by_host == {"cpu@node-a": 1e10, "cpu@node-b": 4e10}
    assert len(frame) == len(records)


def test_hosts_of_one_kind_of_machine_are_reported_as_one(tmp_path):
    _two_hosts(tmp_path, "CPU A")
    frame, runs = report.load([str(tmp_path)])
    assert set(frame["device"]) == {"cpu"} and len(runs) == 1


def test_hosts_under_one_cpu_name_with_other_caches_are_kept_apart(tmp_path):
    # one marketing name over two generations (1 MiB against 512 KiB of L2): two machines, not one
    _two_hosts(tmp_path, "CPU A", second_l2=2**19)
    frame, runs = report.load([str(tmp_path)])
    assert sorted(frame["device"].unique()) == ["cpu@node-a", "cpu@node-b"] and len(runs) == 2
