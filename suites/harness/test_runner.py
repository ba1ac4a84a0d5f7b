"""The sweep engine end to end: statuses, correctness before speed, crash-proof store, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fastformer_bench.problem import Problem
from fastformer_bench.results import ResultStore, read_points
from fastformer_bench.runner import run_sweep
from fastformer_bench.sweep import Settings, measure_point

FAST = Settings(threads=2, warmup_s=0.01, min_time_s=0.02, min_samples=3, max_samples=5, time_limit_s=30,
                count_flops=False)


def tiny(impl: str, **changes) -> Problem:
    return Problem(**{"impl": impl, "batch": 2, "seq_len": 16, "width": 8, "heads": 2, **changes})


def test_ok_point_has_times_memory_work_and_small_error():
    record = measure_point(tiny("eager", masked=True), FAST, run_id="r")
    assert record["status"] == "ok", record["reason"]
    assert record["time_p20"] <= record["time_median"] <= record["time_p80"]
    assert len(record["samples"]) >= FAST.min_samples
    assert record["max_rel_err"] <= record["tolerance"]
    assert record["reference_impl"] == "reference"
    assert record["flops"] > 0 and record["bytes_min"] > 0
    assert record["peak_bytes"] is not None


def test_softmax_point_checked_against_materialised_softmax():
    record = measure_point(tiny("softmax_sdpa", mode="fwd_bwd"), FAST)
    assert record["status"] == "ok", record["reason"]
    assert record["reference_impl"] == "softmax_naive"


@pytest.mark.usefixtures("test_impls")
def test_wrong_answer_is_recorded_incorrect_without_any_timing():
    record = measure_point(tiny("test_wrong"), FAST)
    assert record["status"] == "incorrect"
    assert record["max_rel_err"] > record["tolerance"]
    for field in ("time_median", "time_p20", "time_p80", "samples", "peak_bytes", "compile_s", "energy_j"):
        assert record[field] is None, field


@pytest.mark.usefixtures("test_impls")
def test_out_of_memory_is_a_status_and_the_sweep_goes_on(tmp_path):
    problems = [tiny("test_huge"), tiny("eager")]
    records = run_sweep(problems, FAST, tmp_path, preset="t", progress=False, cap_memory=False)
    assert [r["status"] for r in records] == ["oom", "ok"]
    assert "allocate" in records[0]["reason"]
    assert len(read_points(tmp_path / "points.jsonl")) == 2


@pytest.mark.usefixtures("test_impls")
def test_point_time_limit_gives_timeout():
    settings = Settings(**{**FAST.__dict__, "time_limit_s": 1.0, "min_time_s": 5.0, "max_samples": 100})
    record = measure_point(tiny("test_slow"), settings)
    assert record["status"] == "timeout"
    assert record["time_median"] is None


@pytest.mark.usefixtures("test_impls")
def test_isolated_crash_becomes_crashed_and_the_sweep_goes_on(tmp_path):
    records = run_sweep([tiny("test_abort"), tiny("eager")], FAST, tmp_path, preset="t", isolate=True,
                        progress=False)
    assert [r["status"] for r in records] == ["crashed", "ok"]
    assert "SIGABRT" in records[0]["reason"]


def test_unsupported_device_is_recorded_not_raised():
    record = measure_point(tiny("eager", device="cuda"), FAST)
    assert record["status"] == "unsupported"
    assert record["reason"]


def test_store_cuts_a_partial_tail_left_by_a_killed_writer(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"schema": 1, "point_id": "a", "impl": "eager", "family": "additive", "device": "cpu",
                  "dtype": "float32", "mode": "fwd", "scope": "core", "batch": 1, "seq_len": 1, "width": 1,
                  "heads": 1, "columns": 2, "masked": False, "status": "ok"})
    with open(store.path, "a") as fh:
        fh.write('{"schema": 1, "point_id": "b", "impl": "ea')
    assert [r["point_id"] for r in read_points(store.path)] == ["a"]
    ResultStore(tmp_path)  # reopening (as --resume does) removes the tail for good
    assert store.path.read_text().count("\n") == 1
    assert store.path.read_text().endswith("}\n")


def test_rerun_into_a_full_directory_refuses_instead_of_mixing(tmp_path):
    run_sweep([tiny("eager")], FAST, tmp_path, preset="t", progress=False, cap_memory=False, env={"x": 1})
    with pytest.raises(ValueError, match="--resume"):
        run_sweep([tiny("eager")], FAST, tmp_path, preset="t", progress=False, cap_memory=False)
    other = Settings(**{**FAST.__dict__, "min_time_s": 9.0})
    with pytest.raises(ValueError, match="min_time_s"):
        run_sweep([tiny("eager")], other, tmp_path, preset="t", resume=True, progress=False, cap_memory=False)
    with pytest.raises(ValueError, match="preset"):
        run_sweep([tiny("eager")], FAST, tmp_path, preset="u", resume=True, progress=False, cap_memory=False)


def _run_cli(args, **kw):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "fastformer_bench", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_kill_9_then_resume_gives_every_point_once(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--preset", "quick", "--out", str(out), "--impl", "eager,softmax_sdpa,softmax_naive",
            "--seq-len", "8,16,32,48", "--width", "8", "--heads", "2", "--no-flops", "--min-time", "0.2",
            "--no-progress"]
    proc = _run_cli(args)
    points = out / "points.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if points.exists() and points.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_points(points)
    assert 2 <= len(first) < 12, "the kill should land mid-sweep"
    done = _run_cli([*args, "--resume"])
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr
    lines = [json.loads(line) for line in points.read_text().splitlines()]
    ids = [r["point_id"] for r in lines]
    assert len(ids) == len(set(ids)) == 12
    before = {r["point_id"]: r["samples"] for r in first}
    after = {r["point_id"]: r["samples"] for r in lines}
    assert all(after[k] == v for k, v in before.items()), "resume must not re-measure finished points"
    assert len({r["run_id"] for r in lines}) == 1
    run = json.loads((out / "run.json").read_text())
    assert len(run["resumed_sessions"]) == 1, "the first session's environment stays; the resume is appended"


@pytest.mark.parametrize("impl, small, large", [("eager", "reference", "eager"), ("reference", "reference", "eager"),
                                                ("softmax_naive", "softmax_naive", "softmax_sdpa"),
                                                ("softmax_sdpa", "softmax_naive", "softmax_sdpa")])
def test_quadratic_ground_truth_only_where_affordable(impl, small, large):
    from fastformer_bench.sweep import REFERENCE_BUDGET_BYTES, reference_for

    assert reference_for(tiny(impl, seq_len=1024, heads=8, width=512)) == small
    # B·H·N² float64 weights far beyond the budget: the float64 run of the best trusted linear/fused one instead
    huge = tiny(impl, seq_len=16384, heads=8, width=512, batch=1)
    assert huge.batch * huge.heads * huge.seq_len**2 * 8 > REFERENCE_BUDGET_BYTES
    assert reference_for(huge) == large
