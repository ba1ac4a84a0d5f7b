"""The sweep engine end to end: statuses, correctness before speed, crash-proof store, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastformer_bench.point import Settings, base_record, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.results import ResultStore, read_points
from fastformer_bench.runner import run_sweep

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
    assert set(record["contention"]) == {"cpu_wait", "cpu_pressure", "cpu_steal"}
    assert all(v is None or 0 <= v <= 1 for v in record["contention"].values())


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


def test_an_out_of_memory_float64_check_is_named_the_checks_not_the_implementations(monkeypatch):
    """The first GPU run recorded SDPA at N = 8192 as out of memory when only its float64 check was: the report
    then said SDPA ran out of memory there."""
    from fastformer_bench import point
    from fastformer_bench.results import REFERENCE_OOM

    real = point._outputs

    def outputs(problem, inputs, impl):
        if impl != problem.impl:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(problem, inputs, impl)

    monkeypatch.setattr(point, "_outputs", outputs)
    # a layer point (an additive core's check would go in chunks instead: suites/correctness/test_reference_chunked)
    record = measure_point(tiny("eager", scope="layer"), FAST)
    assert record["status"] == "oom"
    assert record["reason"].startswith(f"{REFERENCE_OOM} (reference): OutOfMemoryError: CUDA out of memory")
    assert record["time_median"] is None and record["samples"] is None


@pytest.mark.usefixtures("test_impls")
def test_out_of_memory_is_a_status_and_the_sweep_goes_on(tmp_path):
    problems = [tiny("test_huge"), tiny("eager")]
    records = run_sweep(problems, FAST, tmp_path, preset="t", progress=False)
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


def test_a_point_of_gigabytes_under_an_address_space_cap_runs_in_a_process_of_its_own(tmp_path, monkeypatch):
    # A heap grown by a quadratic point keeps its address space in the sweep's process, and a later large point
    # then found no room under the cap (softmax_naive N = 8192 oom in a machine with 22 GiB free): a point the
    # memory model predicts above 1/16 of the cap runs in a child, the others stay in the process.
    from fastformer_bench import point, runner
    from fastformer_bench.measure import memory_cap

    children = []
    real = runner._isolated

    def isolated(problem, *args):
        children.append(problem.impl)
        return real(problem, *args)

    monkeypatch.setattr(runner, "_isolated", isolated)
    naive = tiny("softmax_naive")
    need = point.predicted_need_bytes(naive)
    assert need and point.predicted_need_bytes(tiny("eager")) is None  # eager has no memory model
    monkeypatch.setattr(memory_cap, "address_space_cap", lambda: 15 * need)  # need > cap / 16
    records = run_sweep([naive, tiny("eager")], FAST, tmp_path / "a", preset="t", progress=False)
    assert children == ["softmax_naive"] and [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["samples"] and records[0]["run_id"] == records[1]["run_id"]
    monkeypatch.setattr(memory_cap, "address_space_cap", lambda: 17 * need)  # below the share: in this process
    run_sweep([naive], FAST, tmp_path / "b", preset="t", progress=False)
    monkeypatch.setattr(memory_cap, "address_space_cap", lambda: None)  # no cap (a GPU run, a test): never
    run_sweep([naive], FAST, tmp_path / "c", preset="t", progress=False)
    assert children == ["softmax_naive"]


def test_an_oom_in_a_capped_sweep_process_is_measured_again_in_a_fresh_one(tmp_path, monkeypatch):
    # The sweep's process keeps its heap, so its address space can fill up under the cap: N = 131072 fwd_bwd
    # points (268 MB for stream) were recorded oom late in the cpu study. An oom there is tried in a child.
    from fastformer_bench import runner
    from fastformer_bench.measure import memory_cap

    children = []

    def in_process(problem, settings, run_id="", preset=None):
        return {**base_record(problem, run_id, preset, settings=settings), "status": "oom", "reason": "full"}

    def isolated(problem, settings, run_id, preset):
        children.append(problem.impl)
        return {**base_record(problem, run_id, preset, settings=settings), "status": "ok", "reason": None}

    monkeypatch.setattr(runner, "measure_point", in_process)
    monkeypatch.setattr(runner, "_isolated", isolated)
    monkeypatch.setattr(memory_cap, "address_space_cap", lambda: 2**40)
    records = run_sweep([tiny("eager")], FAST, tmp_path / "a", preset="t", progress=False)
    assert children == ["eager"] and [r["status"] for r in records] == ["ok"]
    monkeypatch.setattr(memory_cap, "address_space_cap", lambda: None)  # uncapped: the oom is the machine's
    records = run_sweep([tiny("eager")], FAST, tmp_path / "b", preset="t", progress=False)
    assert children == ["eager"] and [r["status"] for r in records] == ["oom"]


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
    run_sweep([tiny("eager")], FAST, tmp_path, preset="t", progress=False, env={"x": 1})
    with pytest.raises(ValueError, match="--resume"):
        run_sweep([tiny("eager")], FAST, tmp_path, preset="t", progress=False)
    other = Settings(**{**FAST.__dict__, "min_time_s": 9.0})
    with pytest.raises(ValueError, match="min_time_s"):
        run_sweep([tiny("eager")], other, tmp_path, preset="t", resume=True, progress=False)
    with pytest.raises(ValueError, match="preset"):
        run_sweep([tiny("eager")], FAST, tmp_path, preset="u", resume=True, progress=False)


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
    proc.communicate()  # reaps it and closes its pipes
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
                                                ("softmax_naive", "softmax_naive", "softmax_blocked"),
                                                ("softmax_sdpa", "softmax_naive", "softmax_blocked")])
def test_quadratic_ground_truth_only_where_affordable(impl, small, large):
    from fastformer_bench.point import REFERENCE_BUDGET_BYTES, reference_for

    assert reference_for(tiny(impl, seq_len=1024, heads=8, width=512)) == small
    # B·H·N² float64 weights far beyond the budget: the float64 run of the best trusted linear/fused one instead
    huge = tiny(impl, seq_len=16384, heads=8, width=512, batch=1)
    assert huge.batch * huge.heads * huge.seq_len**2 * 8 > REFERENCE_BUDGET_BYTES
    assert reference_for(huge) == large


# --- revisits: a point still noisy after its windows is measured again at the end of the sweep ---------------

def _scripted_measurements(monkeypatch, script: dict[int, list[dict]]) -> list[int]:
    """Replace measure_point: the k-th measurement of seq_len n returns script[n][k]; returns the call order."""
    import fastformer_bench.runner as runner

    calls: list[int] = []

    def measure(problem, settings, run_id="", preset=None):
        n = problem.seq_len
        k = calls.count(n)
        calls.append(n)
        outcome = script[n][k]
        if isinstance(outcome, BaseException):
            raise outcome
        median = outcome.get("median", 1.0)
        spread = outcome.get("spread", 0.0)
        return {**base_record(problem), "status": outcome.get("status", "ok"),
                "reason": outcome.get("reason"), "time_median": median, "time_p20": median - spread / 2,
                "time_p80": median + spread / 2, "samples": [n + k / 10], "timing_attempts": 2,
                "rejected_samples": [[-k - 1.0]], **({"copy_bytes_per_s_now": outcome["copy"]} if "copy" in outcome
                                                     else {})}

    monkeypatch.setattr(runner, "measure_point", measure)
    return calls


REVISIT = Settings(**{**FAST.__dict__, "max_spread": 0.05, "max_attempts": 2, "revisits": 2})


def test_a_point_still_noisy_is_measured_again_after_the_others_and_the_tighter_kept(monkeypatch, tmp_path):
    calls = _scripted_measurements(monkeypatch, {1: [{"spread": 0.20}, {"spread": 0.03}],
                                                 2: [{"spread": 0.01}], 3: [{"spread": 0.02}]})
    records = run_sweep([tiny("eager", seq_len=n) for n in (1, 2, 3)], REVISIT, tmp_path, preset="t",
                        progress=False)
    assert calls == [1, 2, 3, 1]
    stored = read_points(tmp_path / "points.jsonl")
    assert [r["seq_len"] for r in stored] == [2, 3, 1] and stored == records
    kept = stored[-1]
    assert kept["samples"] == [1.1] and kept["revisits"] == 1
    # every window of both measurements stays in the record: the kept one's rejected, then the other's
    assert kept["rejected_samples"] == [[-2.0], [1.0], [-1.0]] and kept["timing_attempts"] == 4


def test_a_revisit_noisier_than_the_first_measurement_keeps_the_first(monkeypatch, tmp_path):
    _scripted_measurements(monkeypatch, {1: [{"spread": 0.08}, {"spread": 0.30}, {"spread": 0.12}]})
    (record,) = run_sweep([tiny("eager", seq_len=1)], REVISIT, tmp_path, preset="t", progress=False)
    assert record["samples"] == [1.0] and record["revisits"] == 2 and record["timing_attempts"] == 6
    assert len(record["rejected_samples"]) == 5
    assert read_points(tmp_path / "points.jsonl") == [record]


def test_without_revisits_or_target_a_noisy_point_is_stored_as_measured(monkeypatch, tmp_path):
    calls = _scripted_measurements(monkeypatch, {1: [{"spread": 0.5}], 2: [{"spread": 0.5}]})
    no_revisits = Settings(**{**REVISIT.__dict__, "revisits": 0})
    run_sweep([tiny("eager", seq_len=1)], no_revisits, tmp_path / "a", preset="t", progress=False)
    no_target = Settings(**{**REVISIT.__dict__, "max_spread": None, "max_attempts": 1})
    run_sweep([tiny("eager", seq_len=2)], no_target, tmp_path / "b", preset="t", progress=False)
    assert calls == [1, 2]


def test_a_revisit_that_fails_keeps_the_first_timing_but_a_wrong_answer_wins(monkeypatch, tmp_path):
    _scripted_measurements(monkeypatch, {
        1: [{"spread": 0.2}, {"status": "timeout", "reason": "a"}, {"status": "timeout", "reason": "slow host"}],
        2: [{"spread": 0.2}, {"status": "incorrect", "reason": "max relative error 1 > tolerance"}]})
    records = run_sweep([tiny("eager", seq_len=n) for n in (1, 2)], REVISIT, tmp_path, preset="t",
                        progress=False)
    wrong, timed_out = records  # the wrong answer is final after one revisit; the other is held for two
    assert timed_out["status"] == "ok" and timed_out["samples"] == [1.0] and "slow host" in timed_out["revisit_note"]
    assert wrong["status"] == "incorrect" and wrong["revisits"] == 1


def test_a_point_timed_in_a_memory_bandwidth_slump_is_measured_again_after_the_others(monkeypatch, tmp_path):
    # Steady (spread 1 %) at every measurement, so only the copy right after each point can tell. N=5 was timed
    # while the host copied at 5 GB/s, against a median of 15 GB/s over the sweep's copies: 3x slower, measured
    # again at the end at full bandwidth, and the faster measurement kept. N=4 at 14.9 GB/s is ordinary: below
    # 80 % of the one 20 GB/s reading, but not of the median. N=1 is the first copy: nothing to judge it against.
    calls = _scripted_measurements(monkeypatch, {
        1: [{"median": 1.0, "spread": 0.01, "copy": 15e9}],
        2: [{"median": 1.0, "spread": 0.01, "copy": 20e9}],
        3: [{"median": 1.0, "spread": 0.01, "copy": 15e9}],
        4: [{"median": 1.0, "spread": 0.01, "copy": 14.9e9}],
        5: [{"median": 3.0, "spread": 0.03, "copy": 5e9}, {"median": 1.0, "spread": 0.01, "copy": 15e9}],
        6: [{"median": 1.0, "spread": 0.01}]})  # inside the cache: no copy measured, nothing to compare
    records = run_sweep([tiny("eager", seq_len=n) for n in range(1, 7)], REVISIT, tmp_path, preset="t",
                        progress=False)
    assert calls == [1, 2, 3, 4, 5, 6, 5]
    slumped = next(r for r in records if r["seq_len"] == 5)
    assert slumped["time_median"] == 1.0 and slumped["copy_bytes_per_s_now"] == 15e9 and slumped["revisits"] == 1
    assert slumped["rejected_samples"][1] == [5.0]  # the slumped window's samples stay in the record
    no_revisits = Settings(**{**REVISIT.__dict__, "revisits": 0})
    calls.clear()
    run_sweep([tiny("eager", seq_len=n) for n in range(1, 6)], no_revisits, tmp_path / "b", preset="t",
              progress=False)
    assert calls == [1, 2, 3, 4, 5]
    early = {1: [{"median": 3.0, "spread": 0.03, "copy": 5e9}], 2: [{"median": 1.0, "spread": 0.01, "copy": 15e9}]}
    calls = _scripted_measurements(monkeypatch, early)
    run_sweep([tiny("eager", seq_len=n) for n in (1, 2)], REVISIT, tmp_path / "c", preset="t", progress=False)
    assert calls == [1, 2]  # fewer than runner.MIN_COPIES copies: no typical one to judge by yet


def test_a_revisit_in_a_slow_steady_episode_does_not_replace_a_faster_measurement(monkeypatch, tmp_path):
    # N=1: fast but noisy (19.3 ms at 6 %), then a bandwidth slump: 3x slower, steady (2 %). The ranges do not
    # overlap, so the fast one stays (and, still noisy, is revisited again). N=2: the same speed both times, so
    # the steadier wins as before.
    _scripted_measurements(monkeypatch, {
        1: [{"median": 19.3, "spread": 0.06 * 19.3}, {"median": 59.6, "spread": 0.02 * 59.6},
            {"median": 60.0, "spread": 0.01 * 60.0}],
        2: [{"median": 1.0, "spread": 0.2}, {"median": 1.01, "spread": 0.01}]})
    records = run_sweep([tiny("eager", seq_len=n) for n in (1, 2)], REVISIT, tmp_path, preset="t",
                        progress=False)
    stored = {r["seq_len"]: r for r in read_points(tmp_path / "points.jsonl")}
    assert len(records) == 2
    assert stored[1]["time_median"] == 19.3 and stored[1]["revisits"] == 2
    # both slow measurements' samples stay in the record, among the rejected, and every window is counted
    assert [1.1] in stored[1]["rejected_samples"] and [1.2] in stored[1]["rejected_samples"]
    assert stored[1]["timing_attempts"] == 6
    assert stored[2]["time_median"] == 1.01 and stored[2]["revisits"] == 1


def test_an_interrupted_revisit_still_stores_the_held_point_once(monkeypatch, tmp_path):
    _scripted_measurements(monkeypatch, {1: [{"spread": 0.2}, KeyboardInterrupt()], 2: [{"spread": 0.0}]})
    with pytest.raises(KeyboardInterrupt):
        run_sweep([tiny("eager", seq_len=n) for n in (1, 2)], REVISIT, tmp_path, preset="t", progress=False)
    stored = read_points(tmp_path / "points.jsonl")
    assert [(r["seq_len"], r["samples"]) for r in stored] == [(2, [2.0]), (1, [1.0])]


def test_a_sigterm_stops_a_run_like_ctrl_c_keeping_its_held_point_and_exits_143(tmp_path):
    from fastformer_bench.results import HELD_FILE

    # `kill`, `timeout` and a batch system's time limit stop a background sweep with SIGTERM (a shell's background
    # job ignores Ctrl-C). N=8 is held as noisy; the run is terminated while N=16 is being judged.
    preset = tmp_path / "p.toml"
    preset.write_text("[settings]\nrevisits = 1\nmin_time_s = 0.02\ncount_flops = false\n[[grid]]\n"
                      "impl = ['eager']\nseq_len = [8, 16]\nwidth = [8]\nheads = [2]\nbatch = [2]\n")
    child = """
import os, signal, sys
from fastformer_bench import cli, runner
def noisy(record, max_spread):
    if record["seq_len"] == 16:
        os.kill(os.getpid(), signal.SIGTERM)
    return True
runner.too_noisy = noisy
sys.exit(cli.main(sys.argv[1:]))
"""
    out = tmp_path / "out"
    args = ["run", "--preset", str(preset), "--out", str(out), "--no-progress"]
    stopped = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr
    assert "terminated; finished points are saved" in stopped.stderr and "Traceback" not in stopped.stderr
    # the held point is stored with its measurement, as on Ctrl-C; the point cut short is not stored at all
    (kept,) = read_points(out / "points.jsonl")
    assert kept["seq_len"] == 8 and kept["time_median"] > 0 and not (out / HELD_FILE).exists()
    # the writer lock went with the process: --resume measures only what is missing
    resumed = subprocess.run([sys.executable, "-m", "fastformer_bench", *args, "--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    stored = read_points(out / "points.jsonl")
    assert sorted(r["seq_len"] for r in stored) == [8, 16] and stored[0] == kept


def test_revisits_must_be_a_whole_number_of_passes():
    with pytest.raises(ValueError, match="revisits"):
        Settings(revisits=-1)


def test_a_point_held_for_revisit_survives_kill_9_and_resume_revisits_it(monkeypatch, tmp_path):
    import fastformer_bench.runner as runner
    from fastformer_bench.results import HELD_FILE

    # The child holds the N=8 point as noisy, then dies at once (no finally, like kill -9) after measuring N=16.
    child = f"""
import os, sys
from fastformer_bench import runner
from fastformer_bench.problem import Problem
from fastformer_bench.point import Settings
runner.too_noisy = lambda record, max_spread: os._exit(9) if record["seq_len"] == 16 else True
problems = [Problem(impl="eager", batch=2, seq_len=n, width=8, heads=2) for n in (8, 16)]
runner.run_sweep(problems, Settings(**{REVISIT.__dict__!r}), {str(tmp_path)!r}, preset="t", progress=False)
"""
    died = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    (held,) = read_points(tmp_path / HELD_FILE)
    assert held["seq_len"] == 8 and not (tmp_path / "points.jsonl").exists()
    # Resumed: N=8 is revisited once (noisy until then), N=16 is measured for the first time.
    monkeypatch.setattr(runner, "too_noisy",
                        lambda record, max_spread: record["seq_len"] == 8 and not record.get("revisits"))
    problems = [tiny("eager", seq_len=n) for n in (8, 16)]
    records = run_sweep(problems, REVISIT, tmp_path, preset="t", resume=True, progress=False)
    stored = {r["seq_len"]: r for r in read_points(tmp_path / "points.jsonl")}
    assert len(records) == 2 and set(stored) == {8, 16} and not (tmp_path / HELD_FILE).exists()
    revisited = stored[8]
    assert revisited["revisits"] == 1 and stored[16].get("revisits") is None
    windows = [revisited["samples"], *revisited["rejected_samples"]]
    assert held["samples"] in windows, "the killed run's measurement is kept, as the result or among the rejected"
    assert revisited["timing_attempts"] == len(windows) > held["timing_attempts"] == 1 + len(held["rejected_samples"])
    with pytest.raises(ValueError, match="--resume"):
        run_sweep(problems, REVISIT, tmp_path, preset="t", progress=False)


def test_one_resume_check_serves_speed_and_probe_sweeps(tmp_path):
    from fastformer_bench.probe.point import ProbeSettings
    from fastformer_bench.results import PROBE
    from fastformer_bench.runner import start_run

    (record,) = run_sweep([tiny("eager")], FAST, tmp_path, preset="t", progress=False)
    previous, run_id = start_run(tmp_path, resume=True, preset="t", settings=FAST)
    assert run_id == previous["run_id"] == record["run_id"]
    with pytest.raises(ValueError, match="--resume"):
        start_run(tmp_path, resume=False, preset="t", settings=FAST)
    # a probe sweep resumed into a speed sweep's directory is refused by the same check
    with pytest.raises(ValueError, match="not of the probe preset 't'"):
        start_run(tmp_path, resume=True, preset="t", settings=ProbeSettings(), kind=PROBE)
    with pytest.raises(ValueError, match=r"different settings \(min_samples\)"):
        start_run(tmp_path, resume=True, preset="t", settings=Settings(**{**FAST.__dict__, "min_samples": 4}))
    assert start_run(tmp_path / "new", resume=True, preset="t", settings=FAST)[0] == {}
