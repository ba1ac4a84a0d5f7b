"""Child-process entry for ``run --isolate``: one point in, one JSON record out (last line of stdout)."""

from __future__ import annotations

import json
import sys

from fastformer_bench.measure.process import prepare_process
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.results import json_safe


def main() -> None:
    job = json.loads(sys.stdin.read())
    problem = Problem(**job["problem"])
    settings = Settings(**job["settings"])
    # A point of the threads axis sets up its process at its own count (the inter-op count too, settable once).
    prepare_process(problem.threads or settings.threads, cap_memory=problem.device == "cpu")
    record = measure_point(problem, settings, run_id=job["run_id"], preset=job["preset"])
    print(json.dumps(json_safe(record), allow_nan=False, default=str), flush=True)


if __name__ == "__main__":
    main()
