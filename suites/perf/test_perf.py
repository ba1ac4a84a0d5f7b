"""pytest-benchmark benchmarks of every implementation on a small grid, correctness first.

Run with ``pytest suites/perf --benchmark-enable --benchmark-json F`` (the default test run disables
benchmarks and does not collect this folder). Each benchmark is grouped by problem, so
``pytest-benchmark compare`` lines implementations up per problem.

Timing: ``benchmark.pedantic`` around the harness's step followed by a device synchronisation, so every
reported statistic is the time of completed calls, also on a GPU. Rounds and iterations per round come from
the harness's own timer (timing.time_step), so a round is as long as one of the harness's samples; the
harness's median and method are kept in extra_info to cross-check the two.
"""

from __future__ import annotations

import pytest
import torch

from fastformer_bench import impls as registry
from fastformer_bench.measure import flops as flops_measure
from fastformer_bench.measure import memory as memory_measure
from fastformer_bench.measure import timing
from fastformer_bench.point import check_correctness
from fastformer_bench.problem import Problem, make_inputs, make_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = "bfloat16" if DEVICE == "cuda" else "float32"
#: (batch, seq_len, width, heads, mode): small enough for a CPU, two lengths to show the scaling
GRID = [(2, 256, 256, 4, "fwd"), (2, 1024, 256, 4, "fwd"), (2, 1024, 256, 4, "fwd_bwd")]
if DEVICE == "cuda":
    GRID = [(4, 4096, 512, 8, "fwd"), (4, 16384, 512, 8, "fwd"), (4, 4096, 512, 8, "fwd_bwd")]


def _problem_id(point: tuple) -> str:
    batch, seq_len, width, heads, mode = point
    return f"B{batch}-N{seq_len}-D{width}-H{heads}-{mode}"


@pytest.mark.parametrize("point", GRID, ids=_problem_id)
@pytest.mark.parametrize("impl", registry.names())
def test_perf(benchmark, impl: str, point: tuple) -> None:
    batch, seq_len, width, heads, mode = point
    problem = Problem(impl=impl, batch=batch, seq_len=seq_len, width=width, heads=heads, mode=mode, device=DEVICE,
                      dtype=DTYPE)
    found = registry.get(impl)
    reason = problem.skip_reason() or found.unsupported_reason(DEVICE, problem.torch_dtype)
    if reason is None and DEVICE == "cpu" and impl == "triton":
        reason = "Triton's CPU interpreter checks correctness; its speed is not the kernel's"
    if reason is not None:
        pytest.skip(reason)
    inputs = make_inputs(problem)
    step = make_step(problem, inputs)
    if found.compiles:
        benchmark.extra_info["compile_s"] = timing.time_first_call(step, DEVICE)
    accuracy = check_correctness(problem, inputs)
    benchmark.extra_info.update(max_abs_err=accuracy["max_abs_err"], max_rel_err=accuracy["max_rel_err"],
                                reference_impl=accuracy["reference_impl"])
    # Correctness before speed: a wrong answer fails the test and is never timed.
    assert accuracy["ok"], (f"{impl} is incorrect: max relative error {accuracy['max_rel_err']:.3g} > "
                            f"{accuracy['tolerance']:g} against {accuracy['reference_impl']}")

    benchmark.group = f"{problem.mode} B={batch} N={seq_len} D={width} H={heads} {DTYPE} {DEVICE}"
    shape = dict(batch=batch, seq_len=seq_len, width=width, heads=heads, columns=problem.columns)
    benchmark.extra_info.update(
        flops=flops_measure.analytic_flops(found.family, found.quadratic, problem.scope, mode, **shape),
        bytes_min=flops_measure.minimal_bytes(found.family, problem.scope, mode,
                                              dtype_bytes=problem.torch_dtype.itemsize, **shape),
    )
    benchmark.extra_info["peak_bytes"], benchmark.extra_info["memory_method"] = memory_measure.peak_memory(
        step, DEVICE)
    if benchmark.disabled:  # --benchmark-disable (the default addopts): check the point, call it once, no timing
        benchmark(step)
        return
    harness = timing.time_step(step, DEVICE, warmup_s=0.1, min_time_s=0.3, min_samples=5, max_samples=30)
    benchmark.extra_info.update(harness_median_s=harness.median, harness_method=harness.method,
                                calls_per_sample=harness.calls_per_sample)

    def synchronised() -> None:
        step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(synchronised, rounds=max(5, len(harness.samples)), iterations=harness.calls_per_sample,
                       warmup_rounds=1)
