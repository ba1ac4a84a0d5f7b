"""A probe sweep, cell by cell, into the same kind of store as a speed sweep (points.jsonl, run.json, one writer,
``--resume`` refusing other settings). A run that fails is a record, never a lost sweep.

A *cell* is the points that differ only in mixer, implementation, columns and seed. Every point of a cell trains
once per learning rate (``lrs``); validation accuracy picks each point's rate; the cell is conclusive when its
control reaches ``bar`` on every seed (softmax for a pairwise task, every point for a global one). An inconclusive
cell trains again, every point at every rate, at twice the steps while that stays within the cap (``max_steps``).
Its records are written when it is decided (docs/probe.md §3).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from fastformer_bench.probe import tasks
from fastformer_bench.probe.point import BUDGETS, ProbePoint, ProbeSettings
from fastformer_bench.results import PROBE, SCHEMA, ResultStore, writer_lock

#: the axes that may differ inside a cell; every other axis (task, N, width, ..., the grid's budget) makes it
WITHIN_CELL = ("mixer", "impl", "columns", "seed")
#: what a record keeps of each run of its point's sweep
SWEEP_FIELDS = ("lr", "steps", "steps_run", "val_accuracy", "accuracy", "train_s", "status")


def cell_key(point: ProbePoint) -> dict:
    return {k: v for k, v in point.params().items() if k not in WITHIN_CELL}


def cell_id(point: ProbePoint) -> str:
    """16 hex digits naming the cell ``point`` belongs to."""
    blob = json.dumps({"kind": "probe-cell", **cell_key(point)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def probe_record(point: ProbePoint, settings: ProbeSettings, run_id: str, preset: str) -> dict:
    """The identity part of a probe record (docs/probe.md §3)."""
    from fastformer_bench.measure.env import cpu_model

    budget = point.budget(settings)  # the steps it trains for, whether its grid's or the settings'
    return {"schema": SCHEMA, "kind": PROBE, "run_id": run_id, "point_id": point.point_id, "preset": preset,
            **point.params(), **{name: getattr(budget, name) for name in BUDGETS}, "device": "cpu",
            "device_name": cpu_model(), "threads": settings.threads, "settings_hash": settings.digest,
            "cell": cell_id(point), "status": "ok", "reason": None}


def train_run(point: ProbePoint, settings: ProbeSettings, lr: float, steps: int) -> dict:
    """One run of the sweep (``point`` at ``lr`` for ``steps``); a failure (time limit, memory, exception) is its
    ``status`` and ``reason``, never an exception."""
    from fastformer_bench.probe.train import train_point

    failed = {"lr": lr, "steps": steps, "steps_run": None, "val_accuracy": None, "accuracy": None, "train_s": 0.0}
    try:
        return {**train_point(point, settings, lr=lr, steps=steps), "status": "ok", "reason": None}
    except TimeoutError as exc:
        return {**failed, "status": "timeout", "reason": str(exc), "train_s": settings.time_limit_s}
    except MemoryError:
        return {**failed, "status": "oom", "reason": "out of memory while training"}
    except Exception as exc:  # the run failed, not the sweep: say where, keep going
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**failed, "status": "error",
                "reason": f"{type(exc).__name__}: {exc} ({where.filename.split('/')[-1]}:{where.lineno})"}


def choose(runs: list[dict]) -> dict:
    """The run with the best validation accuracy (the first rate in ``lrs`` order on a tie); the first failure
    where no run is ok. The test accuracy never takes part."""
    ok = [run for run in runs if run["status"] == "ok"]
    if not ok:
        return runs[0]
    return max(ok, key=lambda run: run["val_accuracy"])  # max keeps the first of equals


@dataclass
class Cell:
    """A cell's points, the round it is in and every run so far (per point id, in training order)."""

    points: list[ProbePoint]
    settings: ProbeSettings
    steps: int = 0
    extensions: int = 0
    runs: dict[str, list[dict]] = field(default_factory=dict)
    waiting: int = 0

    def __post_init__(self) -> None:
        self.budget = self.points[0].budget(self.settings)  # budget axes are the cell's: every point has them
        self.steps = self.budget.steps
        self.runs = {p.point_id: [] for p in self.points}

    @property
    def id(self) -> str:
        return cell_id(self.points[0])

    def jobs(self) -> list[tuple[ProbePoint, ProbeSettings, float, int]]:
        """This round's runs: every point at every rate."""
        found = [(p, self.settings, lr, self.steps) for p in self.points for lr in self.settings.lrs]
        self.waiting = len(found)
        return found

    def add(self, point: ProbePoint, run: dict) -> bool:
        """Keep one finished run; True when it completes the round."""
        self.runs[point.point_id].append(run)
        self.waiting -= 1
        return self.waiting == 0

    def sweep(self, point: ProbePoint) -> list[dict]:
        """The point's runs by round, then in ``lrs`` order (however the workers finished them)."""
        return sorted(self.runs[point.point_id], key=lambda run: (run["steps"], self.settings.lrs.index(run["lr"])))

    def chosen(self, point: ProbePoint) -> dict:
        return choose([run for run in self.sweep(point) if run["steps"] == self.steps])

    def controls(self) -> list[ProbePoint]:
        """The points that must reach the bar: softmax for a pairwise task, every point for a global one."""
        if tasks.KINDS[self.points[0].task] == "global":
            return list(self.points)
        return [p for p in self.points if p.mixer == "softmax"]

    def conclusive(self) -> bool:
        controls = self.controls()
        return bool(controls) and all(self.chosen(p)["status"] == "ok" and self.chosen(p)["accuracy"]
                                      >= self.settings.bar for p in controls)

    def extend(self) -> bool:
        """After a round: double the steps (True) if the cell is inconclusive, has a control, every run of the
        round was ok and the doubled budget is within the cap."""
        if self.conclusive() or not self.controls() or 2 * self.steps > self.budget.cap:
            return False
        if any(run["status"] != "ok" for runs in self.runs.values() for run in runs if run["steps"] == self.steps):
            return False
        self.steps *= 2
        self.extensions += 1
        return True

    def control_sentence(self) -> str:
        controls = self.controls()
        bar = f"{100 * self.settings.bar:.0f} %"
        if not controls:
            return "no softmax point in this cell: no control, so no conclusion."
        who = "both mixers" if tasks.KINDS[self.points[0].task] == "global" else "softmax"
        lowest = min(controls, key=lambda p: -1.0 if self.chosen(p)["accuracy"] is None
                     else self.chosen(p)["accuracy"])
        accuracy = self.chosen(lowest)["accuracy"]
        where = lowest.mixer + (f" C={lowest.columns}" if lowest.mixer == "additive" else "")
        shown = "no accuracy (" + self.chosen(lowest)["status"] + ")" if accuracy is None else f"{100 * accuracy:.1f} %"
        return (f"{who} had to reach {bar} on every seed at {self.steps} steps; lowest {shown} "
                f"({where}, seed {lowest.seed}).")

    def records(self, run_id: str, preset: str) -> list[dict]:
        """One record per point: its chosen run of the final round, and its whole sweep."""
        conclusive, control = self.conclusive(), self.control_sentence()
        found = []
        for point in self.points:
            runs, best = self.sweep(point), self.chosen(point)
            record = probe_record(point, self.settings, run_id, preset)
            measured = {k: v for k, v in best.items() if k not in ("status", "reason", "steps_run")}
            record.update(measured)
            record.update({"status": best["status"], "reason": best.get("reason"), "lr": best["lr"],
                           "val_accuracy": best["val_accuracy"], "steps": self.steps, "extensions": self.extensions,
                           "sweep": [{k: run.get(k) for k in SWEEP_FIELDS} for run in runs],
                           "cell_conclusive": conclusive, "control": control,
                           "train_s": sum(run["train_s"] for run in runs)})
            found.append(record)
        return found


def cells_of(points: list[ProbePoint], settings: ProbeSettings) -> list[Cell]:
    """The points grouped into cells, in the order their first point comes."""
    grouped: dict[str, list[ProbePoint]] = {}
    for point in points:
        grouped.setdefault(cell_id(point), []).append(point)
    return [Cell(members, settings) for members in grouped.values()]


def run_probe(points: list[ProbePoint], settings: ProbeSettings, out: str, *, preset: str, resume: bool = False,
              env: dict | None = None, progress: bool = True) -> list[dict]:
    """Train every cell not yet decided in ``out`` (with ``resume``), appending its records when it is decided.

    Resume works per cell: a cell whose every point has a record is skipped; a cell with some points recorded is
    trained whole again (the control needs all its points; training is deterministic) and only its missing
    points' records are appended."""
    from fastformer_bench.runner import start_run

    with writer_lock(out):
        store = ResultStore(out)
        previous, run_id = start_run(out, resume=resume, preset=preset, settings=settings, kind=PROBE)
        done = store.finished_ids() if resume else set()
        if not previous:
            store.write_run({**(env or {}), "kind": PROBE, "run_id": run_id, "preset": preset,
                             "settings": asdict(settings), "settings_hash": settings.digest})
        todo = [cell for cell in cells_of(points, settings) if any(p.point_id not in done for p in cell.points)]
        total = sum(len(cell.points) for cell in todo)
        records: list[dict] = []
        started = time.monotonic()

        def decided(cell: Cell) -> None:
            for record in cell.records(run_id, preset):
                if record["point_id"] in done:
                    continue
                store.append(record)  # as each cell is decided: an interrupted sweep loses only cells in flight
                records.append(record)
                if progress:
                    outcome = (f"accuracy {record['accuracy']:.3f} (chance {record['chance']:.3f}), lr "
                               f"{record['lr']:g}, {record['steps']} steps, {record['train_s']:.1f} s"
                               if record["status"] == "ok" else f"{record['status']}: {record['reason']}")
                    point = next(p for p in cell.points if p.point_id == record["point_id"])
                    print(f"[{len(records)}/{total}, {time.monotonic() - started:.0f} s] {point.label}: {outcome}",
                          file=sys.stderr, flush=True)
            if progress:
                state = "conclusive" if cell.conclusive() else "inconclusive"
                print(f"  cell {cell.id} {state}: {cell.control_sentence()}", file=sys.stderr, flush=True)

        if settings.workers == 1:
            for cell in todo:
                while True:
                    for job in cell.jobs():
                        cell.add(job[0], train_run(*job))
                    if not cell.extend():
                        break
                decided(cell)
            return records
        # Runs are independent and each trains on its own seeded streams with a fixed thread count, so training
        # them side by side changes no record, only the wall time. Every cell's first round is queued at once; a
        # cell's next round as soon as its round completes, so both workers stay busy across cells.
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
        with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
            futures = {}

            def submit(cell: Cell) -> None:
                for job in cell.jobs():
                    futures[pool.submit(train_run, *job)] = (cell, job[0])

            for cell in todo:
                submit(cell)
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        cell, point = futures.pop(future)
                        if cell.add(point, future.result()):
                            if cell.extend():
                                submit(cell)
                            else:
                                decided(cell)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return records
