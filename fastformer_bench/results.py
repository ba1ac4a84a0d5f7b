"""The record contract (docs/design.md §4), the crash-proof JSONL store, and loading to pandas.

Pure Python + pandas: the report imports this module and must never import torch (so the facts that schema-1
records lack are read from a data file, never from the registry).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

from fastformer_bench import axes, pidlock

SCHEMA = 2
#: schemas ``read_points`` accepts; older ones are upgraded on read (``upgrade``)
READABLE = (1, 2)
POINTS_FILE = "points.jsonl"
#: a shard of the store: one per cluster job (points.<array>_<task>.jsonl), each with that job as its only writer
SHARD_GLOB = "points.*.jsonl"
#: records of points measured but still waiting for a revisit at the end of the sweep (runner.run_sweep);
#: it exists only while a sweep runs or after one was killed, and --resume takes it up
HELD_FILE = "held.jsonl"
RUN_FILE = "run.json"
#: the facts of each implementation as they stood while schema 1 was current, for upgrading its records
SCHEMA1_FACTS = Path(__file__).parent / "impls" / "schema1.json"

#: ``contended``: timed while another task held the timed CPU beyond the limit, twice; ``noisy``: a CUDA point
#: whose p20-p80 spread stayed above max_spread after its windows (docs/design.md §4.2)
STATUSES = ("ok", "oom", "timeout", "crashed", "incorrect", "unsupported", "contended", "noisy", "error")
#: measured and kept with their samples, but out of fits, figures, crossovers and gates unless asked for
SET_ASIDE = ("contended", "noisy")

#: facts about the implementation, copied from the registry into every record, so that the report reads data:
#: complexity (linear | quadratic); baseline_rank (int: a softmax baseline, 1 = the primary one; or None);
#: expected_exponent ([low, high or None] of time in N at large N, or None); display_order (registry position)
IMPL_FACTS = ("complexity", "baseline_rank", "expected_exponent", "display_order")
#: every axis but the seed, which is a point's input rather than what tells points apart (point_id covers it)
#: (``threads`` is an axis: every record holds the count its point ran at, whether its grid named it or not)
#: (``timing`` and ``cache``, the method axes, hold what a CUDA point was timed with, None on a CPU point)
IDENTITY = ("run_id", "point_id", *axes.names(axes.IMPLEMENTATION, axes.SLICE, axes.LENGTH, axes.SHAPE), "family",
            "device_name", *IMPL_FACTS, "compute_dtype", "settings_hash", *axes.names(axes.METHOD))
#: the axes that are a point's inputs rather than its identity (the seed): every record holds every axis
INPUTS = tuple(axes.names(axes.SEED))
OUTCOME = ("status", "reason")
TIME = ("time_median", "time_p20", "time_p80", "samples", "compile_s")
MEMORY = ("peak_bytes", "memory_method")
WORK = ("flops", "flops_fvcore", "flops_counter", "bytes_min")
ACCURACY = ("max_abs_err", "max_rel_err")
ENERGY = ("energy_j",)
#: field -> {"label", "unit", "per_token"}: the fields of this record that a meter asked the report to show
#: (only those with a value in this record); a plugin meter adds its own fields this way
SHOWN = ("quantities",)
#: fields beyond docs/design.md §4.1's list, kept alongside (never required by readers)
EXTRA = ("preset", "calls_per_sample", "timing_method", "tolerance", "reference_impl", "reference_method",
         "flops_notes", "gpu_clocks", "timing_attempts", "rejected_samples", "revisits", "revisit_note", "contention",
         # the node that measured the point, in a cluster run (its environment: run.json hosts[host])
         "host",
         # bytes/s of a copy past the cache right after the point was timed (measure/bandwidth.py; CPU points
         # whose inputs exceed the last-level cache)
         "copy_bytes_per_s_now",
         # why energy_j is None (no NVML, no counter, or refused: it implied more than the board's enforced power
         # limit); the window's power (W) and seconds, and that limit (W): measure/energy.py
         "energy_reason", "energy_power_w", "energy_window_s", "power_limit_w")
#: a point whose copy_bytes_per_s_now is below this share of the typical copy was timed in a slump of the host's
#: memory bandwidth: a sweep measures it again (against the median of its copies: runner.slumped), the report
#: names it (against the run's roof). Here, in the record contract, because both sides of the layering read it.
SLUMP_SHARE = 0.8
#: how an oom record's reason starts when the float64 check ran out of memory, not the implementation: the point
#: is unchecked (so untimed), and says nothing about how far the implementation itself reaches
REFERENCE_OOM = "the float64 reference check ran out of memory"
FIELDS = ("schema", *IDENTITY, *INPUTS, *OUTCOME, *TIME, *MEMORY, *WORK, *ACCURACY, *ENERGY, *SHOWN)
#: IDENTITY's own optional fields: absent from some writers' records and never needed to read one
_OPTIONAL = ("run_id", "device_name", "threads", "compute_dtype", "settings_hash", *axes.names(axes.METHOD))
#: what every record of any readable schema must hold
REQUIRED = ("schema", *(name for name in IDENTITY if name not in _OPTIONAL + IMPL_FACTS), "status")
#: what a schema-2 record must hold besides (a schema-1 record gets them from SCHEMA1_FACTS on read)
REQUIRED_2 = (*IMPL_FACTS, *SHOWN)
#: capability-probe records (``"kind": "probe"``, docs/design.md §4.4): a trained model's outcome, not a timed call
PROBE = "probe"
PROBE_REQUIRED = ("schema", "kind", "point_id", "task", "mixer", "impl", "columns", "seq_len", "width", "layers",
                  "pairs", "seed", "status")


class ResultsError(ValueError):
    """A results file or directory that cannot be read as fastformer-bench results (one sentence)."""


def new_record(**fields) -> dict:
    """A record with every contract field present (None where unknown), then ``fields``."""
    record = {name: None for name in FIELDS}
    record["schema"] = SCHEMA
    record["quantities"] = {}
    record.update(fields)
    return record


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class ResultStore:
    """Appends one record per line to DIR/points.jsonl, each flushed and fsynced as it completes.

    A run killed mid-write (kill -9) can leave a partial last line: opening the store cuts it off, so the file
    always holds whole records only, and ``--resume`` re-runs that point instead of duplicating it.
    """

    def __init__(self, directory: str | os.PathLike, name: str = POINTS_FILE) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()

    def _drop_partial_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            cut = _described(self.path, data.count(b"\n") + 1, data[keep:].decode(errors="replace"), "was cut off")
            print(f"fastformer-bench: {cut}: that point is measured again", file=sys.stderr)
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def records(self) -> list[dict]:
        """The records stored so far (the last one wins for a repeated point_id)."""
        return read_points(self.path) if self.path.exists() else []

    def finished_ids(self) -> set[str]:
        """point_ids already recorded (any status): what ``--resume`` skips."""
        return {r["point_id"] for r in self.records()}

    def is_empty(self) -> bool:
        return not self.path.exists() or self.path.stat().st_size == 0

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def append(self, record: dict) -> None:
        line = (json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # One write call per record: a kill can only leave a partial tail, which the next open removes.
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_run(self, env: dict) -> None:
        write_json_atomic(self.directory / RUN_FILE, env)


#: held (flock) by the one process writing a results directory; it names that process's pid
LOCK_FILE = "writer.lock"
_held_writer_locks: set[Path] = set()


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the results directory's exclusive writer lock (pidlock); ValueError naming the holder's pid if it is
    taken. The kernel releases it when its process ends, however it ends, so a killed run never leaves a
    directory locked.
    """
    path = Path(directory) / LOCK_FILE
    if path.resolve() in _held_writer_locks:  # this process holds it already (the CLI, then the sweep it runs)
        yield
        return
    try:
        fd = pidlock.acquire(path)
    except pidlock.LockHeld as held:
        raise ValueError(f"{directory} is in use by another fastformer-bench run (pid {held.holder}); wait for it "
                         "to finish or choose another --out.") from None
    _held_writer_locks.add(path.resolve())
    try:
        yield
    finally:
        _held_writer_locks.discard(path.resolve())
        pidlock.release(fd, path)  # the file goes while still held: a waiting writer then makes a fresh one


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(json_safe(payload), fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


_POINT_ID = re.compile(r'"point_id"\s*:\s*"([^"]+)"')


def _line_problem(line: str, schema_error: str | None = None) -> str | None:
    """Why ``line`` is not a readable record (one phrase), or None when it is one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "is not valid JSON"
    schema = record.get("schema") if isinstance(record, dict) else None
    if type(schema) is not int or schema not in READABLE:  # type(): JSON true must not pass for 1
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        return f"has schema {found!r}, expected fastformer-bench schema {' or '.join(map(str, READABLE))}"
    required = PROBE_REQUIRED if record.get("kind") == PROBE else REQUIRED + (REQUIRED_2 if schema >= 2 else ())
    missing = [name for name in required if name not in record]
    if missing:
        return f"lacks required fields {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return f"has unknown status {record['status']!r}"
    return None


def read_points(path: str | os.PathLike, unreadable: list[str] | None = None) -> list[dict]:
    """Records of one points.jsonl, validated; the last record wins for a repeated point_id.

    A bad line raises ResultsError naming it, unless ``unreadable`` is given: then every bad line, and a cut last
    line (a writer killed mid-line, or one still writing), is described there (file, line, point id when it
    can be read) and skipped, so a reader can go on and say what it left out.
    """
    path = Path(path)
    by_id: dict[str, dict] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}.") from None
    lines = text.split("\n")
    # The text after the last newline is a partial tail from a killed writer (or empty): not a record yet.
    tail = lines.pop()
    if tail.strip() and unreadable is not None:
        unreadable.append(_described(path, len(lines) + 1, tail, "is cut off (no line end)"))
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        problem = _line_problem(line)
        if problem is not None:
            if unreadable is None:
                raise ResultsError(f"{path}:{number} {problem}; is this a fastformer-bench results file?")
            unreadable.append(_described(path, number, line, problem))
            continue
        record = upgrade(json.loads(line))
        by_id[record["point_id"]] = record
    return list(by_id.values())


def _described(path: Path, number: int, line: str, problem: str) -> str:
    found = _POINT_ID.search(line)
    return f"{path}:{number} {problem}" + (f" (point {found.group(1)})" if found else "") + "; skipped"


@cache
def _schema1() -> dict:
    return json.loads(SCHEMA1_FACTS.read_text(encoding="utf-8"))


def upgrade(record: dict) -> dict:
    """A schema-1 record with the schema-2 fields filled in (a schema-2 record as it is).

    Schema 1 records carried no implementation facts: they come from the frozen table of the implementations
    that existed then, so old results keep their colours, baselines and targets (an implementation not in it
    gets none). ``quantities`` lists what schema 1's one shown meter (energy) measured in that record. The
    ``schema`` number stays 1: it says the facts were filled on read, not recorded.
    """
    if record["schema"] != 1:
        return record
    table = _schema1()
    facts = table["impls"].get(record["impl"], dict.fromkeys(IMPL_FACTS))
    # copies: the table is cached, and a caller editing one record must not edit every other
    shown = {field: dict(spec) for field, spec in table["quantities"].items() if record.get(field) is not None}
    return {**record, **{name: json.loads(json.dumps(facts[name])) for name in IMPL_FACTS}, "quantities": shown}


def read_run(directory: str | os.PathLike) -> dict:
    path = Path(directory) / RUN_FILE
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {path} as JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise ResultsError(f"{path} does not hold a JSON object.")
    return payload


def shard_path(directory: str | os.PathLike, job: str) -> Path:
    """The points file of one cluster job (its only writer)."""
    return Path(directory) / f"points.{job}.jsonl"


def points_files(directory: str | os.PathLike) -> list[Path]:
    """The points files of a results directory: points.jsonl first, then the shards in job order."""
    directory = Path(directory)
    main = [directory / POINTS_FILE] if (directory / POINTS_FILE).is_file() else []

    def order(path: Path) -> tuple:
        # "12_3" sorts by array then task as numbers, so task 10 follows task 9 and arrays keep their order
        job = path.name[len("points."):-len(".jsonl")]
        return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[_.]", job))

    return main + sorted((p for p in directory.glob(SHARD_GLOB) if p.is_file()), key=order)


def read_store(directory: str | os.PathLike, unreadable: list[str] | None = None) -> list[dict]:
    """Every point of a results directory across its points files, once each: the first file holding a point
    wins (points.jsonl, then the shards in job order). A point found again in a later file is named in
    ``unreadable`` (when given) or on stderr, so a sweep measured twice by mistake is visible, never summed.
    Bad lines are treated as :func:`read_points` treats them."""
    seen: dict[str, Path] = {}
    records: list[dict] = []
    for path in points_files(directory):
        for record in read_points(path, unreadable):
            first = seen.setdefault(record["point_id"], path)
            if first is path:
                records.append(record)
                continue
            note = f"{path}: point {record['point_id']} is also in {first.name}, which is kept; skipped"
            if unreadable is not None:
                unreadable.append(note)
            else:
                print(f"fastformer-bench: {note}", file=sys.stderr)
    return records


def _check_entry(entry: str | os.PathLike) -> Path:
    path = Path(entry)
    if not path.exists() or (path.is_dir() and not points_files(path)):
        raise ResultsError(f"no results at {entry}: expected a directory holding {POINTS_FILE} (or its shards "
                           f"{SHARD_GLOB}) or a points file itself.")
    return path


def load_records(entries: Iterable[str | os.PathLike], unreadable: list[str] | None = None) -> list[dict]:
    """The records of result directories (every shard, a point once: :func:`read_store`) or points files."""
    records: list[dict] = []
    for entry in entries:
        path = _check_entry(entry)
        records.extend(read_store(path, unreadable) if path.is_dir() else read_points(path, unreadable))
    return records


def load_frame(entries: Iterable[str | os.PathLike], unreadable: list[str] | None = None):
    """All records of the given result directories (or points.jsonl files) as one pandas DataFrame (bad lines
    go to ``unreadable`` when it is given, see read_points)."""
    import pandas as pd

    records = load_records(entries, unreadable)
    if not records:
        first = f"; {len(unreadable)} line(s) could not be read, the first: {unreadable[0]}" if unreadable else ""
        raise ResultsError(f"the results hold no records{first}.")
    frame = pd.DataFrame.from_records(records)
    for name in FIELDS:
        if name not in frame.columns:
            frame[name] = None
    return frame
