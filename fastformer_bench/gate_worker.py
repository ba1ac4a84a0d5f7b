"""One side of an A/B gate: a long-lived process that measures whatever point the gate asks, one sample at a time.

The gate copies this file out of the package and runs it with PYTHONPATH set to one side's tree, so it uses only
the stable API every revision has (Problem, make_inputs, make_step, sweep.check_correctness). Protocol: one JSON
object per line on stdin, one reply per line on stdout:
  {"op": "setup", "params": {...}, "threads": T, "warmup_s": S}  -> status, errors, per-call estimate
  {"op": "sample", "calls": K}                                   -> seconds per call over K back-to-back calls
  {"op": "quit"}
Timing is perf_counter around K calls with the garbage collector off, synchronised on CUDA (as timing.py does).
"""

from __future__ import annotations

import gc
import json
import sys
import time


def _reply(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _setup(command: dict) -> tuple[dict, object, str]:
    import torch

    from fastformer_bench import impls as registry
    from fastformer_bench.problem import Problem, make_inputs, make_step
    from fastformer_bench.sweep import check_correctness

    if command.get("threads"):
        torch.set_num_threads(int(command["threads"]))
    problem = Problem(**command["params"])
    impl = registry.get(problem.impl)
    reason = problem.skip_reason() or impl.unsupported_reason(problem.device, problem.torch_dtype)
    if problem.device == "cuda" and not torch.cuda.is_available():
        reason = "no CUDA device on this machine"
    if reason:
        return {"status": "unsupported", "reason": reason}, None, problem.device
    inputs = make_inputs(problem)
    step = make_step(problem, inputs)
    step()  # a compiling implementation compiles here, before the correctness check (as the sweep does)
    accuracy = check_correctness(problem, inputs)
    found = {"max_abs_err": accuracy["max_abs_err"], "max_rel_err": accuracy["max_rel_err"]}
    if not accuracy["ok"]:
        return {**found, "status": "incorrect", "reason": f"max relative error {accuracy['max_rel_err']:.3g} > "
                                                          f"tolerance {accuracy['tolerance']:g}"}, None, problem.device
    durations, start = [], time.perf_counter()
    while len(durations) < 3 or time.perf_counter() - start < command.get("warmup_s", 0.1):
        t0 = time.perf_counter()
        step()
        _sync(problem.device)
        durations.append(time.perf_counter() - t0)
    per_call = sorted(durations[len(durations) // 2:])[len(durations[len(durations) // 2:]) // 2]
    return {**found, "status": "ok", "per_call_s": per_call}, step, problem.device


def main() -> None:
    import torch  # noqa: F401  (imported before the first request, so both sides start up side by side)

    import fastformer_bench.sweep  # noqa: F401

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
            gc.disable()
            try:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(calls):
                    step()
                _sync(device)
                _reply({"s": (time.perf_counter() - t0) / calls})
            except Exception as exc:
                _reply({"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"})
            finally:
                gc.enable()


if __name__ == "__main__":
    main()
