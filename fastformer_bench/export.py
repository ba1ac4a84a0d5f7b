"""Stored results in the formats other tools read (issue 16); the command is commands/export.py:

- ``pytest-benchmark``: the JSON that ``pytest-benchmark compare`` (and ``pytest --benchmark-compare``) loads.
  One benchmark per timed point; its statistics are pytest-benchmark's own (``pytest_benchmark.stats.Stats``)
  over the record's ``samples`` (seconds per call), ``iterations`` = the record's ``calls_per_sample``;
  ``machine_info`` and ``commit_info`` come from the directory's run.json (the whole of it is kept under
  ``machine_info["fastformer_bench_run"]``).
- ``github-action-benchmark``: the action's ``customSmallerIsBetter`` list of ``{"name", "unit", "value",
  "range", "extra"}``: the point's median time per call in ms, the half-width of its p20-p80 band as the range.
- ``github-action-benchmark-memory``: the same list of each timed point's peak memory in MB (smaller is better),
  and ``github-action-benchmark-gflops``: a ``customBiggerIsBetter`` list of its GFLOP/s (the record's analytic
  FLOPs over its median time; range from the p20-p80 band): the action takes one tool per file.
- ``csv``: one row per record, every status, the contract fields first (lists and objects as JSON text).

Correctness before speed: only ``status == "ok"`` points with samples become benchmarks. Results are read
through ``fastformer_bench.results`` (schema 1 is upgraded on read); this module never imports torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from datetime import datetime, timezone
from pathlib import Path

from fastformer_bench import axes, results

FORMATS = ("pytest-benchmark", "github-action-benchmark", "github-action-benchmark-memory",
           "github-action-benchmark-gflops", "csv")
#: the unit of github-action-benchmark values (the action converts between s, ms, us and ns itself)
GAB_UNIT = "ms"
_GAB_SCALE = 1e3
#: the short names docs/design.md §1 gives the shape and length axes; any other axis is written name=value
_LETTERS = {"batch": "B", "seq_len": "N", "width": "D", "heads": "H", "columns": "C"}
#: per-benchmark extra_info: what tells the point's run and implementation apart, then its time, work and memory
_EXTRA_INFO = ("point_id", "run_id", "preset", "family", "complexity", "device_name", "threads", "compute_dtype",
               "settings_hash", *(f for f in results.TIME if f != "samples"), "calls_per_sample", "timing_method",
               *results.MEMORY, *results.WORK, *results.ACCURACY, *results.ENERGY, "contention")
#: run_id ends in the run's start time (runner.new_run_id)
_RUN_TIME = re.compile(r"(\d{8}T\d{6}Z)$")


def render(results_dir: str | os.PathLike, fmt: str) -> tuple[str, str]:
    """The export of ``results_dir`` in format ``fmt`` as text, and a one-line summary of what it holds."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}.")
    records, run = load(results_dir)
    if fmt == "csv":
        return to_csv(records), f"exported {len(records)} records as CSV"
    timed = [r for r in records if samples_of(r) is not None]
    if not timed:
        raise ValueError(f"the results at {results_dir} hold no timed point (status ok, with samples) to export "
                         f"as {fmt}; the csv format exports every record.")
    if fmt in SERIES:
        timed = [r for r in timed if SERIES[fmt][1](r) is not None]
        if not timed:
            raise ValueError(f"the results at {results_dir} hold no timed point with {SERIES[fmt][0]} to export as "
                             f"{fmt}.")
        payload = to_github_action_benchmark_series(timed, run, fmt)
    elif fmt == "pytest-benchmark":
        payload = to_pytest_benchmark(timed, run)
    else:
        payload = to_github_action_benchmark(timed, run)
    text = json.dumps(results.json_safe(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    left = len(records) - len(timed)
    return text, f"exported {len(timed)} timed points as {fmt} JSON ({left} records not timed ok left out)"


def load(results_dir: str | os.PathLike) -> tuple[list[dict], dict]:
    """The records and run.json of a results directory (or of the directory of a points.jsonl)."""
    path = Path(results_dir)
    records = results.load_records([path])
    run = results.read_run(path if path.is_dir() else path.parent)
    if not records:
        raise ValueError(f"the results at {results_dir} hold no records.")
    return records, run


def samples_of(record: dict) -> list[float] | None:
    """The record's samples (seconds per call) when it is a timed point: status ok and finite samples."""
    samples = record.get("samples")
    if record.get("status") != "ok" or not isinstance(samples, list) or not samples:
        return None
    if not all(isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) for s in samples):
        return None
    return [float(s) for s in samples]


# ---- names -------------------------------------------------------------------------------------------------


def _axis_label(name: str, value) -> str | None:
    axis = axes.get(name)
    if value is None:  # an axis this record predates
        return None
    if axis.type is bool:
        return name if value else None
    if axis.role == axes.SEED and value == axis.default:
        return None
    if name in _LETTERS:
        return f"{_LETTERS[name]}{value}"
    return str(value) if axis.type is str else f"{name}={value}"


#: axes left out of names, groups and params: every record holds its thread count, whether its grid named the
#: threads axis or not, so naming it would rename every stored series; points that differ by it alone keep their
#: point_id in the name (named_points), and extra_info holds the count
_UNNAMED = ("threads",)


def _named_axes(*roles: str) -> list[str]:
    return [name for name in axes.names(*roles) if name not in _UNNAMED]


def param_id(record: dict) -> str:
    """The point's axes but the implementation, pytest-id style: ``cpu-float32-fwd-core-B1-N256-D256-H8-C3``."""
    labels = (_axis_label(n, record.get(n)) for n in _named_axes(axes.SLICE, axes.SHAPE, axes.LENGTH, axes.SEED))
    return "-".join(label for label in labels if label is not None)


def point_name(record: dict) -> str:
    """``impl[param_id]``: the point, as pytest would name a parametrised test."""
    return f"{record['impl']}[{param_id(record)}]"


def point_group(record: dict) -> str:
    """The problem (every axis but the implementation and the seed): implementations line up within a group."""
    parts = [str(record.get(n)) for n in _named_axes(axes.SLICE)]
    for name in _named_axes(axes.SHAPE, axes.LENGTH):
        value = record.get(name)
        if axes.get(name).type is bool:
            if value:
                parts.append(name)
        else:
            parts.append(f"{_LETTERS.get(name, name)}={value}")
    return " ".join(parts)


def named_points(records: list[dict]) -> list[tuple[dict, str]]:
    """Each record with its name; two points with the same axes (different runs' settings) keep their point_id."""
    names = [point_name(r) for r in records]
    seen = {n: names.count(n) for n in names}
    return [(r, n if seen[n] == 1 else f"{n[:-1]}-{r['point_id']}]") for r, n in zip(records, names)]


# ---- pytest-benchmark --------------------------------------------------------------------------------------


def _pytest_benchmark():
    try:
        import pytest_benchmark
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise ValueError("the pytest-benchmark format needs the pytest-benchmark package (pip install "
                         "pytest-benchmark).") from None
    return pytest_benchmark.__version__, Stats


def run_time(run: dict) -> str | None:
    """The run's start (ISO 8601, UTC) as its run_id records it, or None."""
    found = _RUN_TIME.search(str(run.get("run_id") or ""))
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).isoformat()


def machine_info(run: dict, records: list[dict]) -> dict:
    """pytest-benchmark's machine_info keys, from run.json where it has them (None where it does not)."""
    cpu_model = run.get("cpu_model") or next((r.get("device_name") for r in records if r.get("device") == "cpu"),
                                             None)
    return {
        "node": run.get("hostname"),
        "processor": cpu_model,
        "machine": None,
        "python_compiler": None,
        "python_implementation": None,
        "python_implementation_version": None,
        "python_version": run.get("python"),
        "python_build": None,
        "release": None,
        "system": None,
        "platform": run.get("platform"),
        "cpu": {"brand_raw": cpu_model, "count": run.get("logical_cores")},
        "gpu": run.get("gpu_name"),
        "torch": run.get("torch"),
        "fastformer_bench_run": run,
    }


def commit_info(run: dict) -> dict:
    dirty = run.get("git_dirty")
    return {"id": run.get("git_commit") or "unknown", "time": None, "author_time": None,
            "dirty": None if dirty is None else bool(dirty), "project": "fastformer-bench", "branch": None}


def to_pytest_benchmark(records: list[dict], run: dict) -> dict:
    """pytest-benchmark's saved-run JSON for the timed points among ``records``."""
    version, Stats = _pytest_benchmark()
    settings = run.get("settings") or {}
    benchmarks = []
    for record, name in named_points([r for r in records if samples_of(r) is not None]):
        samples = samples_of(record)
        stats = Stats()
        for seconds in samples:
            stats.update(seconds)
        found = stats.as_dict()
        found["data"] = samples
        found["iterations"] = int(record.get("calls_per_sample") or 1)
        warmup = settings.get("warmup_s")
        benchmarks.append({
            "group": point_group(record),
            "name": name,
            "fullname": f"fastformer_bench::{name}",
            "param": param_id(record),
            # threads: extra_info; an optional axis a point does not hold (timing on a CPU) is no parameter of it
            "params": {axis: record.get(axis) for axis in axes.NAMES if axis not in _UNNAMED
                       and (record.get(axis) is not None or not axes.get(axis).optional)},
            "extra_info": {field: record.get(field) for field in _EXTRA_INFO},
            "options": {"timer": record.get("timing_method"), "min_rounds": settings.get("min_samples"),
                        "warmup": None if warmup is None else warmup > 0},
            "stats": found,
        })
    return {"machine_info": machine_info(run, records), "commit_info": commit_info(run), "benchmarks": benchmarks,
            "datetime": run_time(run), "version": version}


# ---- github-action-benchmark -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * _GAB_SCALE:.6g}"


def to_github_action_benchmark(records: list[dict], run: dict) -> list[dict]:
    """The action's ``customSmallerIsBetter`` entries: median time per call of each timed point."""
    commit = run.get("git_commit")
    entries = []
    for record, name in named_points([r for r in records if samples_of(r) is not None]):
        samples = samples_of(record)
        median = record.get("time_median")
        median = statistics.median(samples) if median is None else median
        entry = {"name": name, "unit": GAB_UNIT, "value": median * _GAB_SCALE}
        low, high = record.get("time_p20"), record.get("time_p80")
        lines = []
        if low is not None and high is not None:
            entry["range"] = f"± {_ms((high - low) / 2)}"
            lines.append(f"p20-p80: {_ms(low)} - {_ms(high)} {GAB_UNIT}")
        lines.append(f"{len(samples)} samples of {record.get('calls_per_sample') or 1} calls "
                     f"({record.get('timing_method') or 'timer unknown'})")
        if record.get("peak_bytes") is not None:
            lines.append(f"peak memory: {record['peak_bytes']} bytes ({record.get('memory_method')})")
        if record.get("flops") is not None:
            lines.append(f"flops: {record['flops']:.6g}")
        lines.append(f"point {record.get('point_id')} of run {record.get('run_id')}"
                     + (f" at {commit}{' (dirty)' if run.get('git_dirty') else ''}" if commit else ""))
        entry["extra"] = "\n".join(lines)
        entries.append(entry)
    return entries


def _gflops(record: dict, seconds: float | None) -> float | None:
    flops = record.get("flops")
    return flops / seconds / 1e9 if flops and seconds else None


#: format -> (what the series is, its value per record or None, its unit, the range's two ends or None)
SERIES = {
    "github-action-benchmark-memory": ("peak memory", lambda r: r["peak_bytes"] / 1e6 if r.get("peak_bytes")
                                       else None, "MB", lambda r: None),
    "github-action-benchmark-gflops": ("a FLOP count", lambda r: _gflops(r, r.get("time_median")), "GFLOP/s",
                                       lambda r: (_gflops(r, r.get("time_p80")), _gflops(r, r.get("time_p20")))),
}


def to_github_action_benchmark_series(records: list[dict], run: dict, fmt: str) -> list[dict]:
    """The action's entries for a series other than time (SERIES): one per timed point that has it."""
    what, value, unit, ends = SERIES[fmt]
    entries = []
    for record, name in named_points(records):
        entry = {"name": name, "unit": unit, "value": value(record)}
        low, high = ends(record) or (None, None)
        if low is not None and high is not None:
            entry["range"] = f"± {abs(high - low) / 2:.6g}"
        entry["extra"] = (f"{what}; point {record.get('point_id')} of run {record.get('run_id')}"
                          + (f" at {run['git_commit']}" if run.get("git_commit") else ""))
        entries.append(entry)
    return entries


# ---- csv ---------------------------------------------------------------------------------------------------


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(results.json_safe(value), sort_keys=True, allow_nan=False)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def to_csv(records: list[dict]) -> str:
    """One row per record (every status): the contract fields, then the extra ones, then any others."""
    known = [*results.FIELDS, *results.EXTRA]
    others = sorted({key for r in records for key in r} - set(known))
    columns = known + others
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({column: _cell(record.get(column)) for column in columns})
    return out.getvalue()

