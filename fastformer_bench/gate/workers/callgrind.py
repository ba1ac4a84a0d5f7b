"""Runs inside ``valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no``: counts instructions per call.

The gate copies this file out of the package (sides.copy_worker) and runs it with PYTHONPATH set to one side's
tree; it takes the point preflight and the process set-up from that tree through side_api.py.
Instrumentation stays off while torch imports (3x faster under valgrind) and is switched on with
callgrind_control once; each measured region is then collected and dumped on its own, so the dump files map to
regions in order. Job (a JSON file named by argv[1]): {"problems": [params...], "calls": int, "repeats": int}.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import torch
from side_api import check_correctness, incorrect_reason, preflight, prepare_process

from fastformer_bench.problem import Problem, make_inputs, make_step


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    # One thread: worker threads spinning in OpenMP barriers would make the counts depend on the scheduler. The
    # allocator keeps glibc's defaults, on both sides alike.
    prepare_process(1, allocator=False)
    # Correctness first, and while instrumentation is still off: it runs the float64 reference at native-ish speed.
    points = []
    for params in job["problems"]:
        problem = Problem(**params)
        reason = preflight(problem)
        if reason:
            print(json.dumps({"params": params, "status": "unsupported", "reason": reason}), flush=True)
            continue
        inputs = make_inputs(problem)
        step = make_step(problem, inputs)
        accuracy = check_correctness(problem, inputs)
        result = {"params": params, "max_abs_err": accuracy["max_abs_err"], "max_rel_err": accuracy["max_rel_err"]}
        if accuracy["ok"]:
            result["status"] = "ok"
            points.append((result, step))
        else:
            result.update(status="incorrect", reason=incorrect_reason(accuracy))
            print(json.dumps(result), flush=True)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    # The first collected region after switching instrumentation on is not representative: spend it here.
    torch._C._valgrind_toggle()
    torch.ones(8).sum()
    torch._C._valgrind_toggle_and_dump_stats()
    dumps = 1
    for result, step in points:
        for _ in range(3):  # lazy initialisation and allocator warm-up stay out of the counts
            step()
        gc.collect()
        gc.disable()  # a collection lands wherever an allocation count crosses a threshold: noise in the counts
        regions = []
        for _ in range(job["repeats"]):
            torch._C._valgrind_toggle()
            for _ in range(job["calls"]):
                step()
            torch._C._valgrind_toggle_and_dump_stats()
            dumps += 1
            regions.append(dumps)
        gc.enable()
        result["dumps"] = regions
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
