"""The measuring layer of a sweep: a list of Problems into a results directory, with resume, revisits, isolation
and progress. ``fastformer_bench.sweep.run`` (the ``run`` command, and Python) is the entry point above it.

Each point is measured by ``point.measure_point`` (in this process, or in a child with ``isolate`` or where
``point.wants_own_process``: a point of gigabytes in a capped process); the process itself is set up once by
its caller (``measure.process.prepare_process``). ``measure_all`` is the per-machine loop a local sweep and each
cluster job share; ``start_run`` the resume check a speed, cluster and probe sweep share.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone

from fastformer_bench.measure import allocator as allocators
from fastformer_bench.measure import memory_cap
from fastformer_bench.measure.threads import widened
from fastformer_bench.point import Settings, base_record, measure_point, wants_own_process
from fastformer_bench.problem import Problem
from fastformer_bench.results import (
    HELD_FILE,
    PROBE,
    SLUMP_SHARE,
    ResultStore,
    points_files,
    read_run,
    read_store,
    writer_lock,
)


def allocator_of(problem: Problem) -> str | None:
    """The allocator condition a point names (the allocator axis), None where it names none (the sweep's own)."""
    return getattr(problem, "allocator", None)


def _isolated(problem: Problem, settings: Settings, run_id: str, preset: str | None,
              allocator: str | None = None) -> dict:
    """Measure one point in a child process, so a crash or a hang costs that point only.

    ``allocator``: the condition the child is started with (measure/allocator.py): its environment
    (condition_env) and its set-up (the worker: mallopt for ``warm`` only); a condition this machine cannot give
    is ``unsupported`` with the reason, without a child. None: the sweep process's own set-up, as before."""
    job = {"problem": problem.params(), "settings": asdict(settings), "run_id": run_id, "preset": preset}
    base = base_record(problem, run_id, preset, threads=settings.threads, settings=settings)
    child_env = None
    if allocator is not None:
        job["allocator"] = base["allocator"] = allocator
        reason = allocators.unsupported_reason(allocator)
        if reason is not None:
            return {**base, "status": "unsupported", "reason": reason}
        child_env = allocators.condition_env(allocator, os.environ)
    payload = json.dumps(job)
    limit = settings.time_limit_s + 60  # the child's own import and start-up are not the point's fault
    try:
        with widened(problem.threads):  # a 2-thread point's worker must not inherit a 1-CPU pin
            done = subprocess.run([sys.executable, "-m", "fastformer_bench.worker"], input=payload, text=True,
                                  capture_output=True, timeout=limit, env=child_env)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "reason": f"killed after {limit:g} s in an isolated process"}
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return {**base, "status": "crashed", "reason": f"the isolated process died with {name}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {**base, "status": "crashed", "reason": f"the isolated process exited {done.returncode}: {tail}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {**base, "status": "crashed", "reason": "the isolated process printed a malformed record"}


def check_target(out: str | os.PathLike, resume: bool) -> None:
    """ValueError unless ``out`` may take this sweep's records: empty, or being resumed."""
    held_store = ResultStore(out, HELD_FILE)
    filled = any(path.stat().st_size for path in points_files(out))
    if not resume and (filled or not held_store.is_empty()):
        raise ValueError(f"{held_store.directory} already holds results; pass --resume to continue it or choose a "
                         "new --out.")


def new_run_id(preset: str) -> str:
    return f"{preset}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def start_run(out: str | os.PathLike, *, resume: bool, preset: str, settings, kind: str | None = None,
              ) -> tuple[dict, str]:
    """The run.json a sweep into ``out`` continues ({} for a fresh run) and the run's id, once ``out`` is proven
    able to take its records (ValueError otherwise): empty, or resumed under the same preset and settings.

    The one check for a speed sweep, a cluster run and a probe sweep (``kind`` is run.json's: None or PROBE);
    ``settings`` is their Settings or ProbeSettings. The caller holds ``out``'s writer lock."""
    check_target(out, resume)
    previous = read_run(out) if resume else {}
    if resume:
        _check_resumable(out, previous, preset, settings, kind)
    return previous, previous.get("run_id") or new_run_id(preset)


def _check_resumable(out: str | os.PathLike, previous: dict, preset: str, settings, kind: str | None) -> None:
    """A resumed run must measure the way it started, or its points would not be comparable: refuse unless the
    settings of the points already there are proven equal to these (run.json and every record agree)."""
    held = ResultStore(out, HELD_FILE)
    if not any(path.stat().st_size for path in points_files(out)) and held.is_empty():
        return  # nothing measured yet: nothing to be consistent with
    where = held.directory
    what, done = ("probe ", "trained") if kind == PROBE else ("", "measured")
    if not previous.get("settings"):
        raise ValueError(f"cannot resume {where}: its run.json is missing, so the settings its points were {done} "
                         "under cannot be proven equal to these; use a new --out.")
    if previous.get("preset") not in (None, preset) or previous.get("kind") != kind:
        raise ValueError(f"cannot resume {where}: it holds results of preset {previous.get('preset')!r}, not of "
                         f"the {what}preset {preset!r}.")
    try:
        before = type(settings)(**previous["settings"])
    except (TypeError, ValueError):
        raise ValueError(f"cannot resume {where}: its run.json holds settings this version cannot read; use a "
                         "new --out.") from None
    if before.digest != settings.digest:
        changed = sorted(k for k, v in asdict(settings).items() if getattr(before, k) != v)
        raise ValueError(f"cannot resume with different {what}settings ({', '.join(changed)}); use a new --out.")
    foreign = {r.get("settings_hash") for r in [*read_store(out), *held.records()]} - {None, settings.digest}
    if foreign:
        raise ValueError(f"cannot resume {where}: it holds points {done} under other settings "
                         f"({', '.join(sorted(foreign))}) than its run.json says; use a new --out.")


def run_sweep(problems: list[Problem], settings: Settings, out: str | os.PathLike, *, preset: str,
              resume: bool = False, isolate: bool = False, env: dict | None = None,
              progress: bool = True) -> list[dict]:
    """Measure every problem not yet in ``out`` (with ``resume``), appending each record as it completes.

    The layer under :func:`fastformer_bench.sweep.run`, which loads the preset and sets the process up first;
    here the Problems and Settings are given and the process is measured as it is.
    With ``settings.revisits``, a point still above ``max_spread`` is held (in DIR/held.jsonl, so a killed run
    loses nothing and ``resume`` takes it up) and measured again after the other points; see :func:`revisit`.
    One writer per directory: a second sweep into ``out`` while this one runs raises ValueError naming it.
    """
    with writer_lock(out):
        store, held_store = ResultStore(out), ResultStore(out, HELD_FILE)
        previous, run_id = start_run(out, resume=resume, preset=preset, settings=settings)
        done = {r["point_id"] for r in read_store(out)} if resume else set()  # every shard's points too
        # A killed run's points that were waiting for a revisit go straight to it, their first measurement kept.
        waiting = {r["point_id"]: r for r in held_store.records()} if resume else {}
        todo = [p for p in problems if p.point_id not in done and p.point_id not in waiting]
        if previous:
            # The environment that measured the first points stays the run's; each resume is appended.
            if env is not None:
                store.write_run({**previous, "resumed_sessions": previous.get("resumed_sessions", []) + [env]})
        else:
            # Always written: a resume must be able to prove it measures under the same settings.
            store.write_run({**(env or {}), "run_id": run_id, "preset": preset, "settings": asdict(settings),
                             "settings_hash": settings.digest})
        return measure_all(todo, settings, store, held_store, run_id=run_id, preset=preset, isolate=isolate,
                           progress=progress, waiting=[p for p in problems if p.point_id in waiting and
                                                       p.point_id not in done], held=waiting)


def measure_all(todo: list[Problem], settings: Settings, store: ResultStore, held_store: ResultStore, *,
                run_id: str, preset: str | None, isolate: bool, progress: bool, waiting: Sequence[Problem] = (),
                held: dict | None = None, on_record: Callable[[dict], None] | None = None,
                stamp: dict | None = None) -> list[dict]:
    """Measure ``todo`` into ``store``, then revisit the noisy ones (and ``waiting``, whose first records are in
    ``held``); the per-machine loop of a sweep, shared by a local run and each cluster job (its own shard).
    ``on_record(record)`` is called after each record is stored; ``stamp``'s fields are added to every record."""
    # Points waiting for a revisit, in order, and the best record of each so far (not yet in the store).
    queue = list(waiting)
    best = {p.point_id: (held or {})[p.point_id] for p in queue}
    records: list[dict] = []

    def isolated(problem: Problem) -> dict:
        condition = allocator_of(problem)  # named: the child is started with it and says so
        return _isolated(problem, settings, run_id, preset, **({"allocator": condition} if condition else {}))

    def measure(problem: Problem) -> dict:
        # a point naming an allocator condition other than the sweep process's own is measured in a child's
        if isolate or wants_own_process(problem) or allocator_of(problem) not in (None, allocators.DEFAULT_CONDITION):
            return {**isolated(problem), **(stamp or {})}
        record = measure_point(problem, settings, run_id=run_id, preset=preset)
        if record["status"] == "oom" and problem.device == "cpu" and memory_cap.address_space_cap() is not None:
            # Out of room under this process's cap, which its kept heap may have filled: a fresh process has
            # its own heap and cap, so the point is oom only if it is oom there too.
            record = isolated(problem)
        return {**record, **(stamp or {})}

    def keep(record: dict) -> None:
        store.append(record)
        records.append(record)
        best.pop(record["point_id"], None)
        if on_record is not None:
            on_record(record)

    def hold(problem: Problem, record: dict) -> None:
        held_store.append(record)  # fsynced like a result: a kill -9 loses no measurement
        best[problem.point_id] = record
        queue.append(problem)

    copies: dict = {}  # thread count -> every copy bandwidth measured right after a point so far (bytes/s)

    def note(record: dict) -> dict:
        if record.get("status") == "ok" and record.get("copy_bytes_per_s_now"):
            copies.setdefault(record.get("threads"), []).append(record["copy_bytes_per_s_now"])
        return record

    def measure_and_note(problem: Problem) -> dict:
        return note(measure(problem))

    for record in best.values():  # a resumed run's held points: their copies count from the start
        note(record)

    def wants_revisit(record: dict) -> bool:
        return record.get("revisits", 0) < settings.revisits and (
            too_noisy(record, settings.max_spread) or slumped(record, copies.get(record.get("threads"), ())))

    # A point still noisy after its windows waits for a revisit at the end of the sweep: the host's noisy
    # episodes last seconds, so minutes later is an independent chance (see revisit()).
    try:
        with _progress(len(todo), progress) as advance:
            for problem in todo:
                started = time.monotonic()
                record = measure_and_note(problem)
                if wants_revisit(record):
                    hold(problem, record)
                else:
                    keep(record)
                advance(problem, record, time.monotonic() - started)
            # One pass over the held points after another (every queued point wants a revisit, resumed ones
            # too: a resume keeps the settings); a point still noisy goes to the back of the queue.
            while queue:
                problem = queue[0]
                started = time.monotonic()
                record = revisit(best[problem.point_id], measure_and_note(problem))
                advance(problem, record, time.monotonic() - started, revisit=True)
                if wants_revisit(record):
                    hold(problem, record)
                else:
                    keep(record)
                queue.pop(0)  # only now: an interrupt before this line still finds the point in `best`
    finally:
        # Done, or interrupted (Ctrl-C): every held point is stored once, with its best measurement so far.
        for record in list(best.values()):
            keep(record)
        held_store.remove()
    return records


def spread_of(record: dict) -> float | None:
    """(p80 - p20) / median of a timed record, None for a record without a time."""
    median, p20, p80 = (record.get(k) for k in ("time_median", "time_p20", "time_p80"))
    if record.get("status") != "ok" or not median or p20 is None or p80 is None:
        return None
    return (p80 - p20) / median


#: the fewest same-time copies at a thread count before one of them is judged against their median
MIN_COPIES = 3


def slumped(record: dict, copies: Sequence[float]) -> bool:
    """Whether a point was timed while the host's copy bandwidth (measured right after it, measure/bandwidth.py)
    was below SLUMP_SHARE of the median of the copies this sweep measured at its thread count (``copies``).

    The median, not the best: one copy reads 15-20 GB/s on a quiet 2-core VM, and against its best an ordinary
    reading would look like a slump; a lasting drift moves the median along, so it is not revisited forever.
    What this cannot see: the first MIN_COPIES - 1 points at a thread count, and a slump that covers most of the
    copies so far (it is the median then). The report judges every point against the run's roof instead."""
    now = record.get("copy_bytes_per_s_now")
    if record.get("status") != "ok" or not now or len(copies) < MIN_COPIES:
        return False
    return now < SLUMP_SHARE * statistics.median(copies)


def too_noisy(record: dict, max_spread: float | None) -> bool:
    spread = spread_of(record)
    return max_spread is not None and spread is not None and spread > max_spread


def _ranges_apart(a: dict, b: dict) -> bool:
    """Whether two timed records' p20-p80 ranges do not overlap (False where either has no range)."""
    if spread_of(a) is None or spread_of(b) is None:
        return False
    return a["time_p80"] < b["time_p20"] or b["time_p80"] < a["time_p20"]


def revisit(first: dict, again: dict) -> dict:
    """One record from two measurements of a point, carrying the other's samples: the faster one where the two
    p20-p80 ranges do not overlap, else the one with the tighter spread.

    The host's noise only adds time, and it comes in episodes: a memory-bandwidth slump can make every call of a
    window slow alike, steady, so a tight spread alone would prefer it (stream at N = 32768 kept 59.6 ms, spread
    under 5 %, over 19.3 ms at 6 %). Where the ranges overlap, both saw the same speed and the steadier is kept.
    Nothing is hidden: the other measurement's windows join ``rejected_samples`` and ``timing_attempts`` counts
    every window of both. A revisit that failed keeps the first measurement, with the failure in ``revisit_note``,
    except a wrong answer, which is never covered by an earlier timing (correctness before speed).
    """
    count = first.get("revisits", 0) + 1
    if again.get("status") == "incorrect":
        return {**again, "revisits": count}
    if again.get("status") != "ok":
        note = f"a revisit ended {again.get('status')}: {again.get('reason')}"
        return {**first, "revisits": count, "revisit_note": note}

    def spread(record: dict) -> float:
        value = spread_of(record)
        return math.inf if value is None else value

    if _ranges_apart(first, again):
        kept, other = (again, first) if again["time_median"] < first["time_median"] else (first, again)
    else:
        kept, other = (again, first) if spread(again) < spread(first) else (first, again)
    return {**kept,
            "rejected_samples": [*(kept.get("rejected_samples") or []), other["samples"],
                                 *(other.get("rejected_samples") or [])],
            "timing_attempts": (kept.get("timing_attempts") or 1) + (other.get("timing_attempts") or 1),
            "revisits": count}


class _progress:
    """A rich progress bar with ETA on a terminal; one plain line per point otherwise (CI logs)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.count = total, enabled, 0
        self._bar = None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("sweep", total=self.total)
        return self.advance

    def advance(self, problem: Problem, record: dict, seconds: float, revisit: bool = False) -> None:
        label = f"{problem.impl} N={problem.seq_len} D={problem.width} C={problem.columns} {problem.mode}"
        if problem.threads is not None:
            label += f" threads={problem.threads}"
        if revisit:
            label = f"revisit {label}"
        else:
            self.count += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=0 if revisit else 1, description=f"{label}: {record['status']}")
        elif self.enabled:
            print(f"[{self.count}/{self.total}] {label} {problem.dtype} {problem.scope}: {record['status']} "
                  f"({seconds:.1f} s)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
