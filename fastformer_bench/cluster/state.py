"""What the submitting process knows of its jobs: DIR/cluster.json (its own file, written atomically) and the
job states submitit reads from the scheduler (sacct on Slurm, the process on the local executor).

cluster.json lists every submission: executor, submitit folder, submission time, and the point ids of each job.
It is what lets ``--resume`` find an array still running (and wait for it instead of submitting the points a
second time) and name, for a job the scheduler killed, the points it left unmeasured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastformer_bench.results import ResultsError, write_json_atomic

STATE_FILE = "cluster.json"
#: Slurm states (first word of sacct's State) after which a job will write nothing more
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "REVOKED", "SPECIAL_EXIT",
            # submitit's local executor
            "FINISHED", "INTERRUPTED"}


def read_state(out: str | os.PathLike) -> dict:
    path = Path(out) / STATE_FILE
    if not path.exists():
        return {"submissions": []}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {path} as JSON: {exc}.") from None
    if not isinstance(state, dict) or not isinstance(state.get("submissions"), list):
        raise ResultsError(f"{path} is not a fastformer-bench cluster state (no submissions list).")
    return state


def record_submission(out: str | os.PathLike, entry: dict) -> None:
    state = read_state(out)
    state["submissions"].append(entry)
    write_json_atomic(Path(out) / STATE_FILE, state)


def attach(entry: dict) -> dict:
    """submitit Job handles for the jobs of one recorded submission (to read their states and logs)."""
    import submitit

    kind = submitit.SlurmJob if entry["executor"] == "slurm" else submitit.LocalJob
    return {job_id: kind(folder=entry["folder"], job_id=job_id) for job_id in entry["jobs"]}


def _alive(pid: str) -> bool:
    # a zombie is not alive: its process ended, only its parent has not reaped it yet
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def states(jobs: dict, executor: str) -> dict[str, str]:
    """Each job's state now: Slurm's (through submitit's sacct watcher, one sacct call for all), or the local
    executor's; a job whose state is not known yet (just submitted) reads PENDING."""
    found = {}
    if executor == "slurm" and jobs:
        next(iter(jobs.values())).watcher.update()
    for job_id, job in jobs.items():
        if executor == "slurm":
            state = job.watcher.get_state(job_id, mode="cache")
        elif getattr(job, "_process", None) is not None:
            state = job.state
        else:  # a local job of an earlier submitting process: its process id is its job id
            state = "FINISHED" if job.paths.result_pickle.exists() or not _alive(job_id) else "RUNNING"
        found[job_id] = "PENDING" if state in ("UNKNOWN", "", None) else state
    return found


def running_submission(out: str | os.PathLike) -> dict | None:
    """The latest recorded submission with a job not finished yet (None when every job has ended)."""
    for entry in reversed(read_state(out)["submissions"]):
        if not all(finished(s) for s in states(attach(entry), entry["executor"]).values()):
            return entry
    return None


def finished(state: str) -> bool:
    return state.split()[0] in FINISHED


def kill_reason(state: str, info: dict) -> str:
    """Why a job stopped before measuring all its points, in words (``info``: the job's run.<job>.json)."""
    stopped = info.get("stopped")
    if stopped:
        return (f"time limit or preemption: Slurm's warning signal {stopped.get('signal')} came "
                f"{stopped.get('after_s', 0):.0f} s into the job")
    if not info:
        return f"{state}, before it started measuring"
    word = state.split()[0]
    return {"TIMEOUT": "time limit", "NODE_FAIL": "node failure", "PREEMPTED": "preempted",
            "CANCELLED": "cancelled (scancel or an administrator)", "OUT_OF_MEMORY": "out of memory",
            "BOOT_FAIL": "node boot failure", "DEADLINE": "deadline", "INTERRUPTED": "interrupted"}.get(
        word, f"ended {state}")
