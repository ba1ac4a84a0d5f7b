"""Spread a sweep's points over a cluster through submitit: shards, one job array, waiting, the record of it.

``run_sharded`` is the submitting process (``sweep.run`` with an executor calls it; it holds the results
directory's writer lock, its jobs write only their own shard files). It submits the points not yet stored, split
into ``jobs`` shards, as one array; or, resuming, waits for an array that is still running instead of submitting
again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastformer_bench.cluster import state as cluster_state
from fastformer_bench.cluster import watch
from fastformer_bench.cluster.shard import ENV_PREFIX, measure_shard, split
from fastformer_bench.results import (
    RUN_FILE,
    ResultStore,
    points_files,
    read_run,
    read_store,
    write_json_atomic,
    writer_lock,
)

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class ExecutorOptions:
    """How to submit: ``executor`` (local | slurm), then submitit's parameters for it."""

    executor: str
    partition: str | None = None
    jobs: int = 1
    gpus_per_job: int = 0
    time_min: int = 60
    slurm_options: dict = field(default_factory=dict)


def parse_slurm_options(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (sbatch options without their dashes) as a dict; ValueError on any other form."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key.startswith("-"):
            raise ValueError(f"--slurm-option takes KEY=VALUE (an sbatch option without its dashes), got {pair!r}.")
        found[key.strip()] = value
    return found


def preflight(options: ExecutorOptions) -> None:
    """ValueError (one sentence) for a request that cannot be submitted; runs before anything is submitted."""
    if options.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {options.executor!r}; choose one of {', '.join(EXECUTORS)}.")
    for name, value, lowest in (("--jobs", options.jobs, 1), ("--gpus-per-job", options.gpus_per_job, 0),
                                ("--time-min", options.time_min, 1)):
        if value < lowest:
            raise ValueError(f"{name} must be at least {lowest}, got {value}.")
    if options.executor == "local":
        if options.partition or options.slurm_options:
            raise ValueError("--partition and --slurm-option apply to --executor slurm only.")
        return
    if shutil.which("sbatch") is None:
        raise ValueError("--executor slurm needs Slurm's sbatch on PATH, and there is none on this machine.")
    try:
        listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"Slurm does not answer (sinfo: {exc}).") from None
    if listed.returncode != 0:
        raise ValueError(f"Slurm does not answer (sinfo: {(listed.stderr.strip().splitlines() or ['?'])[-1]}).")
    partitions = [p.rstrip("*") for p in listed.stdout.split()]
    if options.partition is not None and options.partition not in partitions:
        raise ValueError(f"partition {options.partition!r} does not exist on this Slurm cluster (it has "
                         f"{', '.join(partitions) or 'none'}).")


def _executor(options: ExecutorOptions, folder: Path, cpus: int):
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.executor)
    params = {"name": "fastformer-bench", "timeout_min": options.time_min, "cpus_per_task": cpus,
              "gpus_per_node": options.gpus_per_job}
    if options.executor == "slurm":
        params["slurm_additional_parameters"] = dict(options.slurm_options)
        if options.partition:
            params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def run_sharded(problems: list, settings, out: str | os.PathLike, *, preset: str, options: ExecutorOptions,
                resume: bool = False, isolate: bool = False, progress: bool = True) -> dict:
    """Measure the points of ``problems`` not yet in ``out`` on the executor's jobs (or wait for the array an
    interrupted submitting process left running), holding ``out``'s writer lock meanwhile (its jobs write only
    their own shard files). Returns watch.summarise's summary plus ``submitted``."""
    from fastformer_bench.measure.env import collect_env
    from fastformer_bench.runner import start_run

    if settings.threads is None:
        raise ValueError("a cluster run needs a thread count per job: set threads in the preset or pass --threads.")
    with writer_lock(out):
        previous, run_id = start_run(out, resume=resume, preset=preset, settings=settings)
        if not previous.get("settings"):
            # Written before anything is submitted: a resume must be able to prove it measures the same way.
            # The measuring machines' environments are added per host as their jobs start (_fold_environments).
            write_json_atomic(Path(out) / RUN_FILE, {
                "run_id": run_id, "preset": preset, "settings": asdict(settings),
                "settings_hash": settings.digest, "executor": options.executor,
                "submitter": collect_env(threads=settings.threads, argv=sys.argv)})
        return _measure_sharded(problems, settings, Path(out).resolve(), preset=preset, run_id=run_id,
                                options=options, isolate=isolate, progress=progress)


def _measure_sharded(problems: list, settings, out: Path, *, preset: str, run_id: str, options: ExecutorOptions,
                     isolate: bool, progress: bool) -> dict:
    """Submit the points not stored yet (or wait for the array still running), then summarise the jobs."""
    recorded = {r["point_id"] for r in read_store(out, [])}
    running = cluster_state.running_submission(out)
    if running:
        entry, submitted = running, False
        jobs = cluster_state.attach(entry)
        _say(progress, f"{entry['executor']} array {entry.get('array')} of an earlier submission is still running: "
                       "waiting for it (nothing is submitted again)")
    else:
        todo = [p for p in problems if p.point_id not in recorded]
        if not todo:
            _say(progress, "every point is already measured: nothing to submit")
            _fold_environments(out)
            return {"jobs": {}, "killed": [], "submitted": False}
        for path in points_files(out):
            ResultStore(out, path.name)  # no job writes now: cut a killed job's partial last line
        entry, jobs = _submit(todo, settings, out, preset=preset, run_id=run_id, options=options, isolate=isolate)
        submitted = True
        _say(progress, f"submitted {len(todo)} points as {len(jobs)} {options.executor} job(s) "
                       f"(array {entry.get('array')}); logs in {entry['folder']}")
    final = watch.wait(out, entry, jobs, progress=progress)
    _fold_environments(out)
    summary = watch.summarise(out, entry, final, {r["point_id"] for r in read_store(out, [])})
    for job_id, job in summary["jobs"].items():
        if job["overhead_s"] is not None:
            _say(progress, f"job {job_id} on {job['host']}: first point {job['overhead_s']:.1f} s after submission")
    return {**summary, "submitted": submitted}


def _submit(todo: list, settings, out: Path, *, preset: str, run_id: str, options: ExecutorOptions,
            isolate: bool) -> tuple[dict, dict]:
    by_id = {p.point_id: p for p in todo}
    shards = split(list(by_id), options.jobs)
    # a fresh submitit folder per submission: job ids restart at 1 when a cluster's state is wiped
    folder = out / "submitit" / time.strftime("%Y%m%dT%H%M%S", time.gmtime()) / f"{os.getpid()}"
    # a job asks for as many CPUs as its most threaded point uses (the threads axis), not only the setting's
    executor = _executor(options, folder, max([settings.threads, *(p.threads or 1 for p in todo)]))
    submitted_at = time.time()
    specs = [{"out": str(out), "problems": [by_id[i].params() for i in shard], "settings": asdict(settings),
              "run_id": run_id, "preset": preset, "isolate": isolate, "argv": sys.argv,
              "submitted_at": submitted_at} for shard in shards]
    handles = executor.map_array(measure_shard, specs)
    jobs = {str(job.job_id): job for job in handles}
    entry = {"executor": options.executor, "folder": str(folder / "%j"), "submitted_at": submitted_at,
             "array": str(handles[0].job_id).split("_")[0] if options.executor == "slurm" else None,
             "options": asdict(options), "jobs": dict(zip(jobs, shards))}
    cluster_state.record_submission(out, entry)  # at once: an interrupted submitter's --resume must find it
    return entry, jobs


def _fold_environments(out: Path) -> None:
    """run.json gets one entry per host under ``hosts`` (the environment of that host's first job, and the jobs
    that ran there); where run.json has no environment of a measuring machine yet, the first host's is copied to
    its top level, so readers of a local run's run.json read a cluster run's the same way."""
    jobs = []
    for path in sorted(out.glob(f"{ENV_PREFIX}*.json")):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a job still writing it (atomic rename: never half a file) or one that never started
    if not jobs:
        return
    run = read_run(out)
    hosts: dict = {}
    for info in sorted(jobs, key=lambda i: i.get("started_at") or 0):
        host = hosts.setdefault(info.get("host") or "?", {**info.get("env", {}), "jobs": []})
        host["jobs"].append({k: info.get(k) for k in ("job", "submitted_at", "started_at", "first_point_at",
                                                     "finished_at", "points")})
    first = next(iter(hosts.values()))
    top = {k: v for k, v in first.items() if k != "jobs" and k not in run}
    write_json_atomic(out / RUN_FILE, {**run, **top, "hosts": hosts})


def _say(enabled: bool, line: str) -> None:
    if enabled:
        print(f"fastformer-bench: {line}", file=sys.stderr, flush=True)
