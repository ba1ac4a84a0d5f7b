"""One cluster job: its share of a sweep's points, measured on its node into its own shard of the store.

Runs on the node (submitit unpickles ``measure_shard`` there): the same process set-up, point code and isolation
as a local ``run``. Its only files are ``points.<job>.jsonl`` (the records, fsynced as each completes),
``held.<job>.jsonl`` (points waiting for a revisit) and ``run.<job>.json`` (this node's environment and when the
job started and measured its first point): no two jobs, and not the submitting process, write one file.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

#: a job's environment file, beside its points file; the submitting process folds these into run.json
ENV_PREFIX = "run."


def split(point_ids: list[str], jobs: int) -> list[list[str]]:
    """Up to ``jobs`` non-empty shards, dealt round-robin: a preset lists points from small to large, so dealing
    gives every job a share of the expensive ones instead of leaving one job all of them."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}.")
    return [shard for shard in (point_ids[i::jobs] for i in range(jobs)) if shard]


def job_name() -> str:
    """This job's id as the scheduler names it (array_task for a Slurm array task, the pid for a local job)."""
    import submitit

    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not started by submitit (a direct call): this process stands for the job
        return f"direct{os.getpid()}"


class _Stopping(BaseException):
    """Slurm's warning that this job is about to be stopped (time limit or preemption).

    A BaseException: the point code turns every Exception of a point into that point's status, and this one is
    not the point's fault, so it must end the job rather than be stored as an error record.
    """


def _on_warning(signum: int, frame) -> None:
    raise _Stopping(signal.Signals(signum).name)


def env_path(out: str | os.PathLike, job: str) -> Path:
    return Path(out) / f"{ENV_PREFIX}{job}.json"


def measure_shard(spec: dict) -> dict:
    """Measure ``spec["problems"]`` (Problem parameters) into this job's shard of ``spec["out"]``; a summary.

    ``spec`` holds plain data only (it is pickled to the node): out, problems, settings, run_id, preset,
    isolate, argv, submitted_at.
    """
    from fastformer_bench.measure.contention import cpu_mhz
    from fastformer_bench.measure.env import collect_env, machine_roofs
    from fastformer_bench.measure.process import prepare_process
    from fastformer_bench.point import Settings
    from fastformer_bench.problem import Problem
    from fastformer_bench.results import HELD_FILE, ResultStore, shard_path, write_json_atomic
    from fastformer_bench.runner import measure_all

    started = time.time()
    job = job_name()
    out = Path(spec["out"])
    settings = Settings(**spec["settings"])
    problems = [Problem(**params) for params in spec["problems"]]
    # As `run` does: an oversized CPU allocation must fail as out-of-memory in the process that makes it.
    cap = not spec["isolate"] and all(p.device == "cpu" for p in problems)
    applied = prepare_process(settings.threads, pin_cpus=settings.pin_cpus, cap_memory=cap,
                              cpus=max((p.threads or 1 for p in problems), default=1))
    env = collect_env(threads=applied["threads"], argv=spec["argv"])
    env.update({k: applied[k] for k in ("threads", "allocator", "cpu_affinity")})
    env.update(machine_roofs(problems, applied["threads"]))
    env["cpu_mhz"] = cpu_mhz()
    info = {"job": job, "host": socket.gethostname(), "submitted_at": spec["submitted_at"], "started_at": started,
            "points": len(problems), "env": env}
    write_json_atomic(env_path(out, job), info)

    def first_point(record: dict) -> None:
        # submission to first point: the overhead a job costs (queueing, start-up, imports, environment)
        if "first_point_at" not in info:
            info["first_point_at"] = time.time()
            write_json_atomic(env_path(out, job), info)

    store = ResultStore(out, shard_path(out, job).name)
    held = ResultStore(out, HELD_FILE.replace(".jsonl", f".{job}.jsonl"))
    print(f"fastformer-bench: job {job} on {info['host']}: {len(problems)} points into {store.path}",
          file=sys.stderr, flush=True)
    # submitit's own handler of the warning signal raises an Exception (caught by the point code, so the point
    # would be stored as an error and the job go on until killed); ours stops the job between two records.
    warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").removeprefix("SIG"))
    signal.signal(warning, _on_warning)
    try:
        records = measure_all(problems, settings, store, held, run_id=spec["run_id"], preset=spec["preset"],
                              isolate=spec["isolate"], progress=True, on_record=first_point,
                              stamp={"host": info["host"]})
    except _Stopping as stop:
        info["stopped"] = {"signal": str(stop), "after_s": time.time() - started}
        write_json_atomic(env_path(out, job), info)
        print(f"fastformer-bench: job {job} stopped by Slurm's warning signal {stop} after "
              f"{info['stopped']['after_s']:.0f} s; its unmeasured points are measured by the next --resume",
              file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    end = machine_roofs(problems, applied["threads"])
    info.update(finished_at=time.time(), copy_bytes_per_s_end=end["copy_bytes_per_s"], roofs_end=end["roofs"],
                cpu_mhz_end=cpu_mhz())
    write_json_atomic(env_path(out, job), info)
    return {"job": job, "host": info["host"], "measured": len(records)}
