"""Sweeps spread over jobs (docs/design.md §3.3; issue 15): on a real single-node Slurm, every point of a sweep
lands exactly once with the status a local run gives it; a submitting process that is interrupted and a job
that is cancelled or reaches its time limit lose nothing and double nothing once resumed."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cancel_all, cli, cli_command, interruptible, submissions

from fastformer_bench import presets, results
from fastformer_bench.report import build_report

QUICK = ["--preset", "quick", "--impl", "eager,softmax_sdpa,reference", "--seq-len", "64,128", "--width", "32",
         "--heads", "2", "--device", "cpu,cuda", "--min-time", "0.05", "--no-flops"]


def _expected_ids(*args: str) -> set[str]:
    """The point ids of a sweep, from the preset (what `list --preset` shows), never from a run."""
    preset, overrides = args[args.index("--preset") + 1], {}
    for name, axis in (("--impl", "impl"), ("--seq-len", "seq_len"), ("--width", "width"), ("--heads", "heads"),
                       ("--device", "device")):
        if name in args:
            value = args[args.index(name) + 1].split(",")
            overrides[axis] = value if axis in ("impl", "device") else [int(v) for v in value]
    problems, _ = presets.expand(presets.load(preset), overrides)
    return {p.point_id for p in problems}


def _lines(out: Path) -> list[dict]:
    """Every complete record line of every points file (a point written twice shows up twice here)."""
    return [json.loads(line) for path in results.points_files(out) for line in path.read_text().splitlines()
            if line.strip()]


def _status(record: dict) -> str:
    # contended says the machine was busy while timing (2 cores, several jobs), not what the point is
    return "ok" if record["status"] == "contended" else record["status"]


def test_a_partition_that_does_not_exist_is_refused_before_anything_is_submitted(slurm, tmp_path):
    out = tmp_path / "out"
    done = cli("run", *QUICK, "--out", str(out), "--executor", "slurm", "--partition", "no-such-partition")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "partition 'no-such-partition' does not exist" in done.stderr
    assert not out.exists()


def test_a_quick_sweep_on_three_jobs_matches_a_local_run(slurm, tmp_path):
    sharded, local = tmp_path / "slurm", tmp_path / "local"
    try:
        done = cli("run", *QUICK, "--out", str(sharded), "--executor", "slurm", "--jobs", "3", timeout=400)
    finally:
        cancel_all(sharded)
    assert done.returncode == 0, done.stderr[-3000:]
    [entry] = submissions(sharded)
    assert len(entry["jobs"]) == 3
    # one shard file per array task, each written by that task alone
    assert sorted(p.name for p in results.points_files(sharded)) == sorted(
        f"points.{job}.jsonl" for job in entry["jobs"])
    expected = _expected_ids(*QUICK)
    lines = _lines(sharded)
    assert sorted(r["point_id"] for r in lines) == sorted(expected)  # every point, each exactly once
    # the overhead per job is reported (submission to first stored point)
    assert len(re.findall(r"first point [\d.]+ s after submission", done.stderr)) == 3

    done = cli("run", *QUICK, "--out", str(local), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    here = {r["point_id"]: _status(r) for r in results.read_store(local)}
    there = {r["point_id"]: _status(r) for r in results.read_store(sharded)}
    assert there == here and set(here.values()) >= {"ok", "unsupported"}

    # the node's environment: one entry per host, naming its jobs; the top level reads like a local run's
    run = results.read_run(sharded)
    host = socket.gethostname()
    assert list(run["hosts"]) == [host]
    assert sorted(j["job"] for j in run["hosts"][host]["jobs"]) == sorted(entry["jobs"])
    assert run["cpu_model"] == run["hosts"][host]["cpu_model"] and run["settings_hash"]
    summary = build_report([str(sharded)], str(tmp_path / "report"))
    assert (tmp_path / "report" / "REPORT.md").exists() and summary


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def test_an_interrupted_submitter_and_a_cancelled_job_lose_nothing_and_double_nothing(slurm, tmp_path,
                                                                                     test_preset):
    out = tmp_path / "out"
    sweep = ["--preset", test_preset, "--seq-len", "64,96,128,160", "--impl", "eager,softmax_sdpa",
             "--min-time", "2", "--no-flops"]
    args = ["run", *sweep, "--out", str(out), "--executor", "slurm", "--jobs", "2"]
    expected = _expected_ids(*sweep)
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        [entry] = _wait_for(lambda: submissions(out), 120, "the array to be submitted")
        victim = next(iter(entry["jobs"]))
        shard = results.shard_path(out, victim)
        # the submitting process goes away (Ctrl-C); its jobs keep running
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        # while its jobs run, a run in this process would measure their points a second time: refused
        done = cli("run", *sweep, "--out", str(out), "--resume")
        assert done.returncode == 2 and "jobs still running" in done.stderr, done.stderr[-3000:]
        # one job is cancelled after its first point, with points still to measure
        _wait_for(lambda: shard.exists() and results.read_points(shard, []), 180, f"job {victim}'s first point")
        subprocess.run(["scancel", victim], check=True, timeout=30)

        # --resume finds the array still running and waits for it instead of submitting again
        done = cli(*args, "--resume", timeout=300)
        assert "still running: waiting for it" in done.stderr, done.stderr[-3000:]
        assert len(submissions(out)) == 1
        assert done.returncode == 1, done.stderr[-3000:]
        lost = set(entry["jobs"][victim]) - {r["point_id"] for r in results.read_store(out)}
        assert lost, "the cancelled job had measured every point before it was cancelled"
        assert f"job {victim} stopped (cancelled" in done.stderr
        assert all(point in done.stderr for point in lost)

        # the next --resume submits exactly the unmeasured points, once
        done = cli(*args, "--resume", timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        first, second = submissions(out)
        assert {p for ids in second["jobs"].values() for p in ids} == lost
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cancel_all(out)
    unreadable: list[str] = []
    assert sorted(r["point_id"] for r in results.read_store(out, unreadable)) == sorted(expected)
    assert sorted(r["point_id"] for r in _lines(out)) == sorted(expected)  # no line twice, across every shard
    assert not [u for u in unreadable if "also in" in u], unreadable


def test_the_local_executor_measures_every_point_once_and_a_resume_has_nothing_to_do(tmp_path, test_preset):
    out = tmp_path / "out"
    args = ["run", "--preset", test_preset, "--out", str(out), "--executor", "local", "--jobs", "2", "--no-flops"]
    done = cli(*args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _expected_ids("--preset", test_preset)
    assert sorted(r["point_id"] for r in _lines(out)) == sorted(expected)
    assert len(results.points_files(out)) == 2
    done = cli(*args, "--resume", timeout=300)
    assert done.returncode == 0 and "nothing to submit" in done.stderr, done.stderr[-3000:]
    assert len(submissions(out)) == 1


def test_time_limit_stops_the_job_between_points_and_names_what_it_left(slurm, time_limit_run):
    assert time_limit_run is not None
    proc, out = time_limit_run["proc"], time_limit_run["out"]
    try:
        _, stderr = proc.communicate(timeout=max(10.0, 330 - (time.monotonic() - time_limit_run["started"])))
    except subprocess.TimeoutExpired:
        pytest.fail("the time-limited sweep was still running 330 s after it was submitted")
    assert proc.returncode == 1, stderr[-3000:]
    [entry] = submissions(out)
    [job] = entry["jobs"]
    stored = results.read_store(out)
    left = set(entry["jobs"][job]) - {r["point_id"] for r in stored}
    assert stored and left, stderr[-3000:]
    assert f"job {job} stopped (time limit or preemption: Slurm's warning signal SIGUSR2" in stderr
    assert all(point in stderr for point in left)
    # the warning ended the job between points: it was never stored as a point's error
    assert {r["status"] for r in stored} <= {"ok", "contended"}
