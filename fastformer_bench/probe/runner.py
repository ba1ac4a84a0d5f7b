"""A probe sweep: each point trained once into the same kind of store as a speed sweep (points.jsonl, run.json,
one writer, ``--resume`` refusing other settings). A point that fails is a record, never a lost sweep."""

from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict

from fastformer_bench.probe.point import BUDGETS, ProbePoint, ProbeSettings
from fastformer_bench.results import PROBE, SCHEMA, ResultStore, writer_lock


def probe_record(point: ProbePoint, settings: ProbeSettings, run_id: str, preset: str) -> dict:
    """The identity part of a probe record (docs/design.md §4.4)."""
    from fastformer_bench.measure.env import cpu_model

    budget = point.budget(settings)  # the steps it trains for, whether its grid's or the settings'
    return {"schema": SCHEMA, "kind": PROBE, "run_id": run_id, "point_id": point.point_id, "preset": preset,
            **point.params(), **{name: getattr(budget, name) for name in BUDGETS}, "device": "cpu",
            "device_name": cpu_model(), "threads": settings.threads, "settings_hash": settings.digest,
            "status": "ok", "reason": None}


def train_record(point: ProbePoint, settings: ProbeSettings, run_id: str, preset: str) -> dict:
    """One point trained and evaluated, its failure (time limit, memory, exception) as the record's status."""
    from fastformer_bench.probe.train import train_point

    record = probe_record(point, settings, run_id, preset)
    try:
        return {**record, **train_point(point, settings)}
    except TimeoutError as exc:
        return {**record, "status": "timeout", "reason": str(exc)}
    except MemoryError:
        return {**record, "status": "oom", "reason": "out of memory while training"}
    except Exception as exc:  # the point failed, not the sweep: say where, keep going
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**record, "status": "error",
                "reason": f"{type(exc).__name__}: {exc} ({where.filename.split('/')[-1]}:{where.lineno})"}


def run_probe(points: list[ProbePoint], settings: ProbeSettings, out: str, *, preset: str, resume: bool = False,
              env: dict | None = None, progress: bool = True) -> list[dict]:
    """Train every point not yet in ``out`` (with ``resume``), appending each record as it completes."""
    from fastformer_bench.runner import start_run

    with writer_lock(out):
        store = ResultStore(out)
        previous, run_id = start_run(out, resume=resume, preset=preset, settings=settings, kind=PROBE)
        done = store.finished_ids() if resume else set()
        if not previous:
            store.write_run({**(env or {}), "kind": PROBE, "run_id": run_id, "preset": preset,
                             "settings": asdict(settings), "settings_hash": settings.digest})
        todo = [p for p in points if p.point_id not in done]
        records: list[dict] = []
        started = time.monotonic()

        def keep(point: ProbePoint, record: dict) -> None:
            store.append(record)  # as each point completes: an interrupted sweep loses only the points in flight
            records.append(record)
            if progress:
                outcome = (f"accuracy {record['accuracy']:.3f} (chance {record['chance']:.3f}), "
                           f"{record['train_s']:.1f} s" if record["status"] == "ok"
                           else f"{record['status']}: {record['reason']}")
                print(f"[{len(records)}/{len(todo)}, {time.monotonic() - started:.0f} s] {point.label}: {outcome}",
                      file=sys.stderr, flush=True)

        if settings.workers == 1 or len(todo) < 2:
            for point in todo:
                keep(point, train_record(point, settings, run_id, preset))
            return records
        # Points are independent and each trains on its own seeded streams with a fixed thread count, so
        # training them side by side changes no record, only the wall time (and train_s, which is per point).
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
        with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
            futures = {pool.submit(train_record, point, settings, run_id, preset): point for point in todo}
            try:
                for future in as_completed(futures):
                    keep(futures[future], future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return records
