"""One side of an A/B gate: a long-lived process that measures whatever point the gate asks, one sample at a time.

The gate copies this file out of the package (sides.copy_worker) and runs it with PYTHONPATH set to one side's
tree; it takes the point preflight and the process set-up from that tree through side_api.py. Protocol: one JSON
object per line on stdin, one reply per line on stdout:
  {"op": "setup", "params": {...}, "threads": T, "warmup_s": S, "check": true}
                                                                 -> status, errors, per-call estimate
  {"op": "sample", "calls": K}                                   -> seconds per call over K back-to-back calls
  {"op": "quit"}
Timing is around K calls with the garbage collector off, synchronised on CUDA (as timing.py does). The clock is
the thread's CPU time for a single-threaded CPU point: time slices a neighbour takes from this thread on its
CPU are not counted, so load elsewhere on a shared runner does not inflate one side (what it still changes,
cache and memory-bus sharing, lands on both sides alike through the interleaving). Wall time otherwise
(several threads, or a GPU), reported as "clock" in each reply.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import sys
import time

# The round's layout (ab.random_layout), laid down before torch is imported: the heap's and the mapped libraries'
# starting addresses move by these amounts, the same on both sides of a round.
_HEAP_BYTES, _MAP_PAGES = (int(v) for v in (os.environ.get("FASTFORMER_BENCH_GATE_LAYOUT") or "0,0").split(",")[:2])
_HEAP_SHIFT = bytearray(_HEAP_BYTES)
_MAP_SHIFT = mmap.mmap(-1, _MAP_PAGES * mmap.PAGESIZE) if _MAP_PAGES else None

import torch  # noqa: E402  imported before the first request, so both sides start up side by side
from side_api import check_correctness, incorrect_reason, preflight, prepare_process  # noqa: E402

from fastformer_bench.problem import Problem, make_inputs, make_step  # noqa: E402


def _layout_fixed() -> bool:
    """Whether this process runs with the kernel's address randomization off (ab._start_child asked for it)."""
    import ctypes

    return bool(ctypes.CDLL(None).personality(0xFFFFFFFF) & 0x0040000)


def _reply(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str) -> tuple[str, object]:
    if device == "cpu" and torch.get_num_threads() == 1:
        return "thread_cpu", time.thread_time
    return "wall", time.perf_counter


def _setup(command: dict) -> tuple[dict, object, str]:
    # Threads only: the allocator is what sides.MALLOC_ENV gives both sides, so both are set up alike.
    prepare_process(int(command["threads"]) if command.get("threads") else None, allocator=False)
    problem = Problem(**command["params"])
    reason = preflight(problem)
    if reason:
        return {"status": "unsupported", "reason": reason}, None, problem.device
    inputs = make_inputs(problem)
    step = make_step(problem, inputs)
    step()  # a compiling implementation compiles here, before the correctness check (as a run does)
    found = {}
    if command.get("check", True):  # the gate checks each point once, in its first round (ab.interleaved)
        accuracy = check_correctness(problem, inputs)
        found = {"max_abs_err": accuracy["max_abs_err"], "max_rel_err": accuracy["max_rel_err"]}
        if not accuracy["ok"]:
            return {**found, "status": "incorrect", "reason": incorrect_reason(accuracy)}, None, problem.device
    durations, start = [], time.perf_counter()
    while len(durations) < 3 or time.perf_counter() - start < command.get("warmup_s", 0.1):
        t0 = time.perf_counter()
        step()
        _sync(problem.device)
        durations.append(time.perf_counter() - t0)
    per_call = sorted(durations[len(durations) // 2:])[len(durations[len(durations) // 2:]) // 2]
    return ({**found, "status": "ok", "per_call_s": per_call, "layout": "fixed" if _layout_fixed() else "random",
             "layout_shift": [_HEAP_BYTES, _MAP_PAGES]},
            step, problem.device)


def main() -> None:
    step, device = None, "cpu"
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        if op == "setup":
            step = None
            gc.collect()
            try:
                reply, step, device = _setup(command)
            except Exception as exc:  # the point failed, the side goes on
                text = (str(exc).strip().splitlines() or [""])[0][:300]
                reply = {"status": "error", "reason": f"{type(exc).__name__}: {text}"}
            _reply(reply)
        elif op == "sample":
            calls = int(command["calls"])
            name, clock = _clock(device)
            gc.disable()
            try:
                _sync(device)
                t0 = clock()
                for _ in range(calls):
                    step()
                _sync(device)
                _reply({"s": (clock() - t0) / calls, "clock": name})
            except Exception as exc:
                _reply({"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"})
            finally:
                gc.enable()


if __name__ == "__main__":
    main()
