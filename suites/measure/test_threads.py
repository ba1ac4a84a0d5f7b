"""The threads axis (a point's own CPU thread count) and measure/threads.py: the thread count and the CPUs a
measuring process runs on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastformer_bench import axes, presets
from fastformer_bench.gate import ab, compare
from fastformer_bench.measure.threads import check_thread_counts, configure_threads, threads_set
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.runner import run_sweep

FAST = Settings(threads=1, warmup_s=0.01, min_time_s=0.02, min_samples=3, max_samples=5, time_limit_s=60,
                count_flops=False, measure_energy=False)
two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a 2-thread point needs 2 logical cores")


def tiny(impl: str = "eager", **changes) -> Problem:
    return Problem(**{"impl": impl, "batch": 1, "seq_len": 64, "width": 32, "heads": 2, **changes})


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_the_axis_parses_and_validates():
    axis = axes.get("threads")
    assert axis.role == axes.SLICE and axis.flag == "--threads-axis"
    assert axis.parse("1, 2") == [1, 2]
    for bad, words in (("1,x", "integers"), ("1,,2", "empty")):
        with pytest.raises(ValueError, match=words):
            axis.parse(bad)
    axis.check(None)  # "the run's setting"
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads"):
            axis.check(bad)
    with pytest.raises(ValueError, match="positive integer"):
        tiny(threads=0)
    assert "threads" not in axes.defaults()  # a grid that does not name it keeps None


def test_a_point_without_threads_keeps_the_point_id_it_had_before_the_axis():
    # the sha256 of every field but the optional axes (threads, and the later timing and cache), exactly as
    # Problem hashed them before those axes existed
    def old_point_id(problem: Problem) -> str:
        fields = {f.name: getattr(problem, f.name) for f in dataclasses.fields(Problem)
                  if not axes.get(f.name).optional}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    preset = presets.Preset(name="t", description="", settings={}, grids=[
        {"impl": ["eager", "softmax_sdpa"], "seq_len": [64, 128], "width": [32], "heads": [2], "masked": [True]}])
    problems, _ = presets.expand(preset)
    assert problems and all(p.threads is None for p in problems)
    assert [p.point_id for p in problems] == [old_point_id(p) for p in problems]
    assert all("threads" not in p.params() for p in problems)  # what a revision older than the axis reads
    named, _ = presets.expand(preset, {"threads": [1, 2]})
    assert len({p.point_id for p in named}) == 2 * len(problems)
    assert not {p.point_id for p in named} & {p.point_id for p in problems}


def test_thread_counts_above_the_logical_cores_are_refused():
    check_thread_counts([None, 1, 2], cores=2)
    with pytest.raises(ValueError, match="threads 3, 8 exceed this machine's 2 logical cores"):
        check_thread_counts([1, 3, 8, None], cores=2)


@pytest.mark.parametrize("args, words", [
    (["--threads-axis", "0"], "positive integer"),
    (["--threads-axis", "1,two"], "integers"),
    (["--threads-axis", str((os.cpu_count() or 1) + 1)], "logical cores"),
    (["--threads", "1,2"], "--threads-axis"),
])
def test_a_bad_threads_value_is_one_line_and_exit_2(args, words, tmp_path):
    done = cli("run", "--preset", "quick", "--out", "X", "--impl", "eager", *args, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
    assert not (tmp_path / "X").exists()


def test_the_gate_refuses_more_threads_than_cores_in_one_line():
    done = cli("gate", "--baseline-rev", "HEAD", "--threads-axis", str((os.cpu_count() or 1) + 1),
               cwd=Path(__file__).resolve().parents[2])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "logical cores" in lines[0], done.stderr


def test_configure_threads_applies_and_none_keeps():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(None) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        configure_threads(0)


def test_threads_set_applies_and_restores():
    before = torch.get_num_threads()
    with threads_set(1) as inside:
        assert inside == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with threads_set(None) as inside:
        assert inside == before


def test_the_gate_pairs_by_threads_and_sends_a_baseline_the_point_without_the_axis():
    base = {**tiny().params(), "status": "ok"}
    assert compare.point_key({**base, "threads": 1}) != compare.point_key({**base, "threads": 2})
    assert compare.point_key(base) == compare.point_key(dict(base))
    sent = ab._side_threads(tiny(threads=2).params(), {"threads": 1})
    assert sent["threads"] == 2 and "threads" not in sent["params"]
    assert ab._side_threads(tiny().params(), {"threads": 1})["threads"] == 1


@pytest.fixture
def threads_log(test_impls, tmp_path, monkeypatch):
    from testkit import plugin_faulty_impls as plugins_for_tests

    log = tmp_path / "threads.log"
    monkeypatch.setenv(plugins_for_tests.THREADS_LOG_ENV, str(log))
    return log


def _seen(log: Path) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for line in log.read_text().splitlines():
        pid, count = map(int, line.split())
        found.setdefault(pid, set()).add(count)
    return found


@two_cores
def test_an_in_process_point_runs_at_its_threads_and_restores_the_setting(threads_log):
    before = torch.get_num_threads()
    record = measure_point(tiny("test_threads_seen", threads=2), FAST)
    assert record["status"] in ("ok", "contended"), record["reason"]
    assert record["threads"] == 2 and torch.get_num_threads() == before
    assert _seen(threads_log) == {os.getpid(): {2}}


@two_cores
def test_isolated_points_run_at_their_threads(threads_log, tmp_path):
    problems = [tiny("test_threads_seen", threads=1), tiny("test_threads_seen", threads=2),
                tiny("test_threads_seen")]
    records = run_sweep(problems, FAST, tmp_path / "r", preset="t", isolate=True, progress=False)
    assert [r["status"] in ("ok", "contended") for r in records] == [True] * 3, [r["reason"] for r in records]
    assert [r["threads"] for r in records] == [1, 2, 1]  # the last at the run's setting
    # each point in its own process, every call of it (check and timing) at the record's count
    assert sorted(map(sorted, _seen(threads_log).values())) == [[1], [1], [2]]


_PIN_AND_WIDEN = """
import json, os, torch
from fastformer_bench.measure.process import prepare_process
from fastformer_bench.measure.threads import threads_set, widened
applied = prepare_process(1, pin_cpus=True, allocator=False, cpus=2)
def masks():
    return sorted({tuple(sorted(os.sched_getaffinity(int(tid)))) for tid in os.listdir("/proc/self/task")})
found = {"pinned": applied["cpu_affinity"], "before": masks()}
with threads_set(2):
    a = torch.randn(512, 512)
    (a @ a).sum()  # starts torch's pool threads, with the mask they are created with
    found["inside"], found["threads"] = masks(), torch.get_num_threads()
found["after"] = masks()
with threads_set(2):
    found["again"] = masks()
import subprocess, sys
with widened(2):  # as the runner starts an isolated 2-thread point's worker
    child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                           capture_output=True, text=True, check=True)
found["child"] = json.loads(child.stdout)
print(json.dumps(found))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs and Linux's per-thread affinity")
def test_a_run_over_the_threads_axis_pins_its_own_thread_count_and_widens_for_more():
    """Claiming the CPUs of the most threaded point left none over on 2 cores, so nothing was pinned: the cpu
    study's 1-thread points floated between both (run.json cpu_affinity null). Now the run's own count is
    pinned, and a 2-thread point widens every thread (torch's pool too) to two CPUs, and narrows back after."""
    done = subprocess.run([sys.executable, "-c", _PIN_AND_WIDEN], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    (cpu,) = found["pinned"]
    assert found["before"] == [[cpu]] and found["after"] == [[cpu]]
    (wide,) = found["inside"]
    assert len(wide) == 2 and cpu in wide and found["threads"] == 2
    assert found["again"] == [wide] and found["child"] == wide


@two_cores
def test_a_run_over_the_threads_axis_records_both_counts_and_the_roofs_of_both(tmp_path):
    preset = tmp_path / "t.toml"
    preset.write_text("[settings]\nthreads = 1\nwarmup_s = 0.01\nmin_time_s = 0.05\nmin_samples = 3\n"
                      "max_samples = 5\ncount_flops = false\nmeasure_energy = false\n"
                      "[[grid]]\nimpl = ['eager']\nseq_len = [64]\nwidth = [32]\nheads = [2]\n")
    out = tmp_path / "r"
    done = cli("run", "--preset", str(preset), "--out", str(out), "--threads-axis", "1,2", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "points at 1, 2 thread(s)" in done.stderr
    records = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted(r["threads"] for r in records) == [1, 2]
    assert {r["status"] for r in records} <= {"ok", "contended"}, [r["reason"] for r in records]
    assert len({r["point_id"] for r in records}) == 2
    run = json.loads((out / "run.json").read_text())
    for key in ("roofs", "roofs_end"):
        assert [(r["device"], r["threads"]) for r in run[key]] == [("cpu", 1), ("cpu", 2)]
        assert all(r["copy_bytes_per_s"] > 0 and r["gemm_flops_per_s"] > 0 for r in run[key])
    # the old readers' field, as before: at the run's setting (1 thread)
    assert run["copy_bytes_per_s"]["cpu"] > 0 and run["copy_bytes_per_s_end"]["cpu"] > 0
    # when it ran and for how long (whole seconds in the stamps, tenths in wall_s)
    assert run["started_at"] <= run["ended_at"] and run["wall_s"] > 0


@two_cores
def test_a_cluster_shard_runs_each_point_at_its_threads_and_records_the_roofs_of_its_host(tmp_path):
    import resource
    import signal
    from dataclasses import asdict

    from fastformer_bench.cluster import shard

    spec = {"out": str(tmp_path), "problems": [tiny(threads=2).params(), tiny().params()],
            "settings": asdict(FAST), "run_id": "r", "preset": "t", "isolate": False, "argv": [], "submitted_at": 0.0}
    # the job sets up its process (threads, memory cap, signal handler): this one's are put back after
    before = signal.getsignal(signal.SIGUSR2), resource.getrlimit(resource.RLIMIT_AS), torch.get_num_threads()
    try:
        summary = shard.measure_shard(spec)  # called directly, it stands for one job on this machine
    finally:
        signal.signal(signal.SIGUSR2, before[0])
        resource.setrlimit(resource.RLIMIT_AS, before[1])
        torch.set_num_threads(before[2])
    records = [json.loads(line) for line in (tmp_path / f"points.{summary['job']}.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in records] == [2, 1]
    info = json.loads(shard.env_path(tmp_path, summary["job"]).read_text())
    for roofs in (info["env"]["roofs"], info["roofs_end"]):
        assert [(r["device"], r["threads"]) for r in roofs] == [("cpu", 1), ("cpu", 2)]
        assert all(r["copy_bytes_per_s"] > 0 and r["gemm_flops_per_s"] > 0 for r in roofs)
    assert info["env"]["copy_bytes_per_s"]["cpu"] > 0 and info["copy_bytes_per_s_end"]["cpu"] > 0
