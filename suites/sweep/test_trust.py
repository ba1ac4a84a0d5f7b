"""Numbers that hold across runs and neighbours (issue 12): one writer per results directory, settings proven
equal before a resume, range-checked settings, unreadable lines named, contention as a status, true dtypes.

Every test here holds on a busy machine: where a competitor matters, the test brings its own and pins it to the
timed CPU, and asserts only what that competitor guarantees whatever else runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastformer_bench.measure.timing import contention_share
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.report import build_report
from fastformer_bench.results import LOCK_FILE, read_points
from fastformer_bench.runner import run_sweep

FAST = Settings(threads=1, warmup_s=0.01, min_time_s=0.02, min_samples=3, max_samples=5, time_limit_s=60,
                count_flops=False)
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def tiny(impl: str = "eager", **changes) -> Problem:
    return Problem(**{"impl": impl, "batch": 1, "seq_len": 16, "width": 8, "heads": 2, **changes})


# -- one writer per results directory (item 3) ------------------------------------------------------------------

def test_a_second_writer_into_one_directory_is_refused_naming_the_first(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom fastformer_bench.results import writer_lock\n"
         f"with writer_lock({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use by another fastformer-bench run \\(pid {holder.pid}\\)"):
            run_sweep([tiny()], FAST, tmp_path, preset="t", progress=False)
        done = cli("run", "--preset", "quick", "--impl", "eager", "--seq-len", "16", "--out", str(tmp_path))
        assert done.returncode == 2 and f"pid {holder.pid}" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not (tmp_path / "points.jsonl").exists()  # neither refused writer wrote a line
    # the lock dies with its holder (however it ends): the directory is free again
    (record,) = run_sweep([tiny()], FAST, tmp_path, preset="t", progress=False)
    assert record["status"] == "ok" and not (tmp_path / LOCK_FILE).exists()


# -- resume proves the settings equal (item 4) -------------------------------------------------------------------

def test_resume_refuses_a_directory_whose_run_json_is_gone(tmp_path):
    run_sweep([tiny()], FAST, tmp_path, preset="t", progress=False)
    (record,) = read_points(tmp_path / "points.jsonl")
    assert record["settings_hash"] == FAST.digest
    (tmp_path / "run.json").unlink()
    other = Settings(**{**FAST.__dict__, "min_samples": 4})
    with pytest.raises(ValueError, match="run.json is missing"):
        run_sweep([tiny(seq_len=17)], other, tmp_path, preset="t", resume=True, progress=False)
    with pytest.raises(ValueError, match="run.json is missing"):
        run_sweep([tiny(seq_len=17)], FAST, tmp_path, preset="t", resume=True, progress=False)


def test_resume_refuses_points_of_other_settings_even_with_a_matching_run_json(tmp_path):
    run_sweep([tiny()], FAST, tmp_path, preset="t", progress=False)
    lines = (tmp_path / "points.jsonl").read_text().splitlines()
    forged = {**json.loads(lines[0]), "point_id": "f" * 16, "settings_hash": "0" * 16}
    (tmp_path / "points.jsonl").write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    with pytest.raises(ValueError, match="other settings"):
        run_sweep([tiny(seq_len=17)], FAST, tmp_path, preset="t", resume=True, progress=False)


def test_report_refuses_one_directory_of_mixed_settings(tmp_path):
    run_sweep([tiny(), tiny(seq_len=17)], FAST, tmp_path / "r", preset="t", progress=False)
    lines = (tmp_path / "r" / "points.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "settings_hash": "0" * 16})
    (tmp_path / "r" / "points.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="mixes points measured under 2 different settings"):
        build_report([str(tmp_path / "r")], str(tmp_path / "out"))


# -- every numeric setting range-checked (item 5) ----------------------------------------------------------------

@pytest.mark.parametrize("flag, value, words", [("--time-limit", "-1", "time_limit_s"),
                                                ("--min-time", "-1", "min_time_s"),
                                                ("--threads", "0", "threads"),
                                                ("--time-limit", "nan", "time_limit_s")])
def test_negative_or_senseless_settings_on_the_command_line_are_exit_2(tmp_path, flag, value, words):
    done = cli("run", "--preset", "quick", "--impl", "eager", "--out", str(tmp_path / "o"), flag, value)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("setting, words", [("time_limit_s = -1", "time_limit_s"), ("min_time_s = 0", "min_time_s"),
                                            ("warmup_s = -0.5", "warmup_s"), ("max_contention = 2.0", "at most 1"),
                                            ("threads = 0", "threads")])
def test_senseless_settings_in_a_preset_are_exit_2(tmp_path, setting, words):
    preset = tmp_path / "p.toml"
    preset.write_text(f"[settings]\n{setting}\n[[grid]]\nimpl = ['eager']\nseq_len = [16]\nwidth = [8]\n")
    done = cli("run", "--preset", str(preset), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- unreadable lines are named, never dropped silently (item 6) -------------------------------------------------

def test_a_cut_last_line_is_named_on_stderr_and_in_the_caveats(tmp_path):
    results = tmp_path / "r"
    problems = [Problem(impl, batch=1, seq_len=n, width=8, heads=2) for impl in ("eager", "softmax_sdpa")
                for n in (16, 32)]
    run_sweep(problems, FAST, results, preset="t", progress=False)
    text = (results / "points.jsonl").read_text()
    last = text.splitlines()[-1]
    cut_id = json.loads(last)["point_id"]
    (results / "points.jsonl").write_text(text[:-20])  # a writer killed before the last record's end
    done = cli("report", str(results), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert f"points.jsonl:4 is cut off (no line end) (point {cut_id}); skipped" in done.stderr
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "1 line of the results could not be read" in report and cut_id in report
    # the speedup figure lost its baseline's second N: it says why, pointing at the cut line
    assert "could not be read (see the caveats) and may hold the missing points" in report


def test_a_garbage_line_in_the_middle_is_named_and_the_rest_still_reported(tmp_path):
    results = tmp_path / "r"
    run_sweep([tiny(seq_len=n) for n in (16, 32, 64)], FAST, results, preset="t", progress=False)
    lines = (results / "points.jsonl").read_text().splitlines()
    (results / "points.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    summary = build_report([str(results)], str(tmp_path / "out"))
    assert summary["points"] == 3 and summary["unreadable"] == [f"{results / 'points.jsonl'}:2 is not valid JSON; "
                                                                "skipped"]


# -- contention is a status (items 1, 2) ------------------------------------------------------------------------

NEEDS_SCHEDSTAT = pytest.mark.skipif(not (Path("/proc/self/schedstat").exists() and hasattr(os, "sched_setaffinity")),
                                     reason="needs Linux schedstat and CPU affinity")


@contextlib.contextmanager
def _beside_a_competitor():
    """This process and a busy loop pinned to one CPU together, for the block."""
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    other = subprocess.Popen([sys.executable, "-c", f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\n"
                              "end = time.monotonic() + 120\nwhile time.monotonic() < end: pass"])
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.3)  # let it start spinning
        yield
    finally:
        other.kill()
        other.wait()
        os.sched_setaffinity(0, allowed)


@NEEDS_SCHEDSTAT
def test_contention_sees_a_competitor_on_the_timed_cpu_whatever_else_runs():
    from fastformer_bench.measure.contention import contention_counters, contention_since

    with _beside_a_competitor():
        start = contention_counters()
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            pass
        shares = contention_since(start)
    # Two spinners on one CPU: this one waits about half the time, more if anything else lands there too.
    assert shares["cpu_wait"] > 0.3, shares
    assert contention_share(shares) >= shares["cpu_wait"]


@NEEDS_SCHEDSTAT
def test_a_point_timed_beside_a_competitor_is_measured_again_then_stored_contended():
    with _beside_a_competitor():
        record = measure_point(tiny(seq_len=64), Settings(**{**FAST.__dict__, "max_contention": 0.1}))
    assert record["status"] == "contended", record["reason"]
    assert "held the timed CPU" in record["reason"] and record["contention"]["remeasured"]
    assert record["contention"]["share"] > 0.1
    assert record["rejected_samples"]  # the first measurement's samples are kept, not hidden
    assert record["time_median"] > 0  # measured, but kept out of fits and figures by its status


def test_contention_share_prefers_the_process_own_wait_over_machine_pressure():
    assert contention_share({"cpu_wait": 0.01, "cpu_pressure": 0.9, "cpu_steal": 0.0}) == 0.01
    assert contention_share({"cpu_wait": 0.01, "cpu_pressure": 0.9, "cpu_steal": 0.2}) == 0.2
    assert contention_share({"cpu_wait": None, "cpu_pressure": 0.3, "cpu_steal": None}) == 0.3
    assert contention_share({"cpu_wait": None, "cpu_pressure": None, "cpu_steal": None}) is None


# -- records say what was really computed (item 11) --------------------------------------------------------------

def test_the_reference_records_that_it_computes_in_float64():
    record = measure_point(tiny("reference"), FAST)
    assert record["status"] == "ok" and record["dtype"] == "float32" and record["compute_dtype"] == "float64"
    assert measure_point(tiny("eager"), FAST)["compute_dtype"] == "float32"


# -- one CPU, one timing process (item 2) -----------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to choose between")
def test_a_second_process_times_on_another_cpu_and_says_which():
    claim = ("import sys\nfrom fastformer_bench.measure.cpu_claims import claim_cpus\n"
             "print(claim_cpus(1, wait_s=5, say=lambda s: print(s, file=sys.stderr)), flush=True)\n")
    first = subprocess.Popen([sys.executable, "-c", claim + "import time; time.sleep(120)"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        (held,) = json.loads(first.stdout.readline())
        second = subprocess.run([sys.executable, "-c", claim + "import os; print(sorted(os.sched_getaffinity(0)))"],
                                capture_output=True, text=True, timeout=60)
        (taken,), pinned = (json.loads(line) for line in second.stdout.splitlines())
        assert taken != held and pinned == [taken]
        assert f"timing on CPU {taken}" in second.stderr
        # It names a CPU it found held (it tries the idlest first, so on a busy machine it may not try that one)
        if "held by" in second.stderr:
            assert f"CPU {held} held by pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
        first.stdout.close()
        first.stderr.close()


# -- out of memory before allocating (item 7) -------------------------------------------------------------------

def test_a_point_predicted_beyond_memory_is_oom_at_once_without_allocating():
    started = time.monotonic()
    record = measure_point(Problem("softmax_naive", batch=1, seq_len=1_000_000, width=8, heads=2), FAST)
    assert record["status"] == "oom" and "predicted to need" in record["reason"] and "GiB" in record["reason"]
    assert time.monotonic() - started < 10  # not after minutes of trying
    assert record["time_median"] is None and record["max_rel_err"] is None  # nothing was run


def test_an_allocation_that_fails_is_oom_with_the_memory_the_process_and_machine_had(monkeypatch):
    # The cpu study stored a 4 GiB point oom that ran ok alone minutes later: the reason must say how much room
    # there was, so a point too large for the machine can be told from a process or moment short of it.
    import re

    from fastformer_bench import point
    from fastformer_bench.measure import memory_cap

    def failing(problem, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 2147483648 bytes. Error code 12")

    monkeypatch.setattr(point, "make_inputs", failing)
    record = measure_point(Problem("eager", batch=1, seq_len=64, width=8, heads=2), FAST)
    assert record["status"] == "oom" and record["reason"].startswith("RuntimeError: [enforce fail")
    found = re.search(r"at the failure: address-space cap (none|[\d.]+ GiB), VmSize ([\d.]+) GiB, VmRSS ([\d.]+) GiB, "
                      r"MemAvailable ([\d.]+) GiB\)$", record["reason"])
    assert found, record["reason"]
    assert (found[1] == "none") == (memory_cap.address_space_cap() is None)
    rss, available = float(found[3]), float(found[4])
    assert 0 < rss <= float(found[2])  # this process's resident set within its address space
    assert available == pytest.approx(memory_cap.meminfo_kib("MemAvailable") / 2**20, rel=0.5)
    assert record["time_median"] is None


def test_the_memory_models_bound_what_the_quadratic_implementations_really_allocate():
    from fastformer_bench import impls

    for name in impls.names():
        impl = impls.get(name)
        if impl.memory_model is None or impl.unsupported_reason("cpu", torch_float32()) is not None:
            continue
        for mode in ("fwd", "fwd_bwd"):
            problem = Problem(name, batch=2, seq_len=256, width=16, heads=2, mode=mode)
            record = measure_point(problem, FAST)
            predicted = impl.memory_model(batch=2, seq_len=256, width=16, heads=2, columns=3, dtype_bytes=4,
                                          backward=mode == "fwd_bwd")
            # the model is what the N^2 terms need: within a factor of the measured peak, never far below it
            assert record["status"] == "ok" and 0.5 * record["peak_bytes"] <= predicted <= 4 * record["peak_bytes"], \
                (name, mode, predicted, record["peak_bytes"])


def torch_float32():
    import torch

    return torch.float32


def test_a_point_past_the_cache_records_the_copy_bandwidth_of_the_moment_it_was_timed(monkeypatch):
    # The last-level cache made tiny (4 KiB) so a tiny point's inputs (1 x 256 x 8 x 4 B x 3 + w) exceed it; the
    # copy itself stays past any real cache (bandwidth.MIN_COPY_BYTES).
    import torch

    from fastformer_bench.measure import bandwidth

    past = tiny(seq_len=256)
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 4096)
    record = measure_point(past, FAST)
    assert record["status"] == "ok" and record["copy_bytes_per_s_now"] > 1e8  # any machine copies 100 MB/s
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 64 * 2**20)
    assert measure_point(past, FAST).get("copy_bytes_per_s_now") is None  # inside the cache: nothing to say
    copies = []
    monkeypatch.setattr("fastformer_bench.measure.env.copy_bandwidth",
                        lambda *a, **k: copies.append((k, torch.get_num_threads())) or 1.0)
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 4096)
    threads = min(2, os.cpu_count() or 1)
    record = measure_point(tiny("eager", seq_len=256, threads=threads), FAST)
    assert record.get("copy_bytes_per_s_now") == 1.0, (record["status"], record["reason"])
    # at the point's own thread count (measure_point sets it for the whole point), past the cache
    assert copies == [({"nbytes": bandwidth.MIN_COPY_BYTES}, threads)]
