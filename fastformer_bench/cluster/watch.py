"""The submitting process's view of its jobs while they run: progress across jobs, and afterwards what each job
measured, when it started, and which points a killed job left unmeasured."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fastformer_bench.cluster import state as cluster_state
from fastformer_bench.cluster.shard import env_path
from fastformer_bench.results import read_points, shard_path

#: statuses of a point that was measured as well as the machine allows; the others count as failed
_DONE = ("ok", "contended", "unsupported")


def _recorded(out: Path, job_id: str) -> dict[str, str]:
    """point id -> status of what one job has stored so far (a line it is still writing is not a record yet)."""
    path = shard_path(out, job_id)
    return {r["point_id"]: r["status"] for r in read_points(path, [])} if path.exists() else {}


def wait(out: Path, entry: dict, jobs: dict, *, progress: bool, poll_s: float = 1.0) -> dict[str, str]:
    """Poll until every job of ``entry`` has finished; print a line whenever the counts or states change (and a
    minute after the last one). Returns each job's final state."""
    last, printed = None, 0.0
    while True:
        now = cluster_state.states(jobs, entry["executor"])
        stored = {job_id: _recorded(out, job_id) for job_id in entry["jobs"]}
        done = sum(status in _DONE for s in stored.values() for status in s.values())
        failed = sum(len(s) for s in stored.values()) - done
        total = sum(len(ids) for ids in entry["jobs"].values())
        where = f"{entry['executor']} array {entry['array']}" if entry.get("array") else f"{entry['executor']} jobs"
        line = (f"{where}: {done} points done, {failed} failed, "
                f"{total - done - failed} pending; " + ", ".join(f"{j} {s}" for j, s in now.items()))
        if progress and (line != last or time.monotonic() - printed > 60):
            print(f"fastformer-bench: {line}", file=sys.stderr, flush=True)
            last, printed = line, time.monotonic()
        if all(cluster_state.finished(s) for s in now.values()):
            return now
        time.sleep(poll_s)


def summarise(out: Path, entry: dict, final: dict[str, str], recorded: set[str]) -> dict:
    """Per job: state, host, overhead (submission to first point) and unmeasured points; ``killed`` lists the
    jobs that stopped before measuring all their points, with the reason in words."""
    summary = {"jobs": {}, "killed": []}
    for job_id, ids in entry["jobs"].items():
        info = _job_env(out, job_id)
        missing = [i for i in ids if i not in recorded]
        first = info.get("first_point_at")
        overhead = first - entry["submitted_at"] if first else None
        summary["jobs"][job_id] = {"state": final.get(job_id), "host": info.get("host"), "overhead_s": overhead,
                                   "unmeasured": missing}
        if missing:
            reason = cluster_state.kill_reason(final.get(job_id) or "UNKNOWN", info)
            summary["killed"].append({"job": job_id, "reason": reason, "unmeasured": missing})
    return summary


def _job_env(out: Path, job_id: str) -> dict:
    import json

    path = env_path(out, job_id)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # the job never started (or died before writing it)
