"""Child-process entry for ``run --isolate``: one point in, one JSON record out (last line of stdout).

A job may name an allocator condition (measure/allocator.py CONDITIONS); the parent started this process with
that condition's environment (allocator.condition_env), and here the process is set up to match: ``warm``
applies the harness's mallopt settings, every other condition keeps the C library's defaults. A preloaded
library that is not really mapped into this process makes the point ``unsupported``, with the reason.
"""

from __future__ import annotations

import json
import sys

from fastformer_bench.measure import allocator
from fastformer_bench.measure.process import prepare_process
from fastformer_bench.point import Settings, base_record, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.results import json_safe


def main() -> None:
    job = json.loads(sys.stdin.read())
    problem = Problem(**job["problem"])
    settings = Settings(**job["settings"])
    condition = job.get("allocator")
    # A point of the threads axis sets up its process at its own count (the inter-op count too, settable once).
    applied = prepare_process(problem.threads or settings.threads, cap_memory=problem.device == "cpu",
                              allocator=condition in (None, allocator.WARM))
    reason = _missing(condition)
    if reason is None:
        record = measure_point(problem, settings, run_id=job["run_id"], preset=job["preset"])
    else:
        record = {**base_record(problem, job["run_id"], job["preset"], threads=settings.threads, settings=settings),
                  "status": "unsupported", "reason": reason}
    if condition is not None:
        record.update(allocator=condition, allocator_process=allocator.condition_facts(condition,
                                                                                         applied["allocator"]))
    print(json.dumps(json_safe(record), allow_nan=False, default=str), flush=True)


def _missing(condition: str | None) -> str | None:
    """Why this process does not hold ``condition`` (a preloaded library not mapped in), or None."""
    if condition in allocator.PRELOADS and allocator.preloaded(condition) is None:
        return (f"the {condition} allocator condition preloads {allocator.PRELOADS[condition]}, but this process "
                "does not map it (/proc/self/maps)")
    return None


if __name__ == "__main__":
    main()
