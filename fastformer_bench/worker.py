"""Child-process entry for ``run --isolate``: one point in, one JSON record out (last line of stdout)."""

from __future__ import annotations

import json
import sys

from fastformer_bench.measure.timing import configure_allocator, configure_threads
from fastformer_bench.problem import Problem
from fastformer_bench.results import json_safe
from fastformer_bench.runner import cap_cpu_memory
from fastformer_bench.sweep import Settings, measure_point


def main() -> None:
    job = json.loads(sys.stdin.read())
    problem = Problem(**job["problem"])
    settings = Settings(**job["settings"])
    configure_threads(settings.threads)
    configure_allocator()
    if problem.device == "cpu":
        cap_cpu_memory()
    record = measure_point(problem, settings, run_id=job["run_id"], preset=job["preset"])
    print(json.dumps(json_safe(record), allow_nan=False, default=str), flush=True)


if __name__ == "__main__":
    main()
