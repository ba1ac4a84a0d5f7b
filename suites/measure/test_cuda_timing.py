"""measure.cuda_timing on a fake GPU: k per sample, graph replays without Python launches, launch's one sync per
sample, the cold cache's flush before every call (and its time taken out), and capture failures as a refusal."""

from __future__ import annotations

import pytest
import torch
from testkit.fake_gpu import FakeGpu

from fastformer_bench.measure import cuda_timing
from fastformer_bench.measure.cuda_timing import (
    MAX_CALLS,
    MIN_SAMPLE_S,
    Sampler,
    TimingUnsupported,
    build_sampler,
    calls_for,
    sample_target_s,
)
from fastformer_bench.measure.timing import time_step

QUICK = {"warmup_s": 0.0, "min_time_s": 0.01, "min_samples": 5, "max_samples": 8}


def _segments(log: list[str]) -> list[list[str]]:
    """The log cut after every sync: one segment per host sync."""
    out, current = [], []
    for name in log:
        current.append(name)
        if name == "sync":
            out.append(current)
            current = []
    return out


def test_a_sample_lasts_the_cpu_paths_share_of_min_time_and_at_least_a_millisecond():
    assert sample_target_s(0.3, 10) == pytest.approx(0.03)
    assert sample_target_s(0.005, 10) == MIN_SAMPLE_S == 1e-3
    assert calls_for(1e-4, 1e-3) == 10 and calls_for(3e-4, 1e-3) == 4  # rounded up: at least the target
    assert calls_for(1.0, 1e-3) == 1
    assert calls_for(1e-9, 1.0) == MAX_CALLS and calls_for(0.0, 1e-3) == MAX_CALLS


def test_graph_replays_the_captured_calls_and_launches_nothing_from_python():
    gpu = FakeGpu(call_s=1e-4)
    t = time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", **QUICK)
    k = t.calls_per_sample
    assert t.method == "graph" and k == calls_for(1e-4, sample_target_s(0.01, 5)) == 20
    assert gpu.graphs == [["step"] * k]  # captured once, k calls
    after = gpu.log[gpu.log.index("capture"):]
    assert "step" not in after  # no call of the step from Python once it is captured
    # every sample (and the first, sizing one) is one replay between two marks and one sync
    assert _segments(after[1:]) == [["mark", "replay", "mark", "sync"]] * (len(t.samples) + 1)
    assert t.median == pytest.approx(1e-4)  # device time per call


def test_graph_samples_too_short_for_the_target_are_recaptured_with_more_calls():
    # Launch-bound: 50 us to launch a 10 us call, so the estimate (launched calls) is 6x what a replay takes.
    gpu = FakeGpu(call_s=1e-5, launch_s=5e-5)
    t = time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", **QUICK)
    first = calls_for(6e-5, 2e-3)
    assert [len(g) for g in gpu.graphs] == [first, calls_for(1e-5 + 5e-5 / first, 2e-3)]
    assert t.calls_per_sample == len(gpu.graphs[-1]) and t.calls_per_sample * t.median >= 2e-3 / 2


def test_launch_enqueues_k_calls_per_sample_with_one_sync():
    gpu = FakeGpu(call_s=1e-4, launch_s=2e-5)
    t = time_step(gpu.step, "cuda", gpu=gpu, method="launch", cache="warm", **QUICK)
    k = t.calls_per_sample
    assert t.method == "launch" and k == calls_for(1.2e-4, 2e-3) and gpu.graphs == []
    segments = _segments(gpu.log)
    sampled = segments[-len(t.samples):]
    assert sampled == [["mark", *["step"] * k, "mark", "sync"]] * len(t.samples)
    assert t.median == pytest.approx(1.2e-4)  # what Python gets: the launch gaps are in it


@pytest.mark.parametrize("method", ["graph", "launch"])
def test_cold_cache_writes_the_flush_buffer_before_every_call_and_takes_its_time_out(method):
    gpu = FakeGpu(call_s=1e-4, flush_s=4e-5, l2_bytes=50 * 2**20)
    t = time_step(gpu.step, "cuda", gpu=gpu, method=method, cache="cold", **QUICK)
    k = t.calls_per_sample
    assert gpu.flush_sizes == [2 * 50 * 2**20]  # one buffer of twice the L2
    if method == "graph":
        assert gpu.graphs == [["flush", "step"] * k, ["flush"] * k]  # the flush is inside the graph
    else:
        sampled = _segments(gpu.log)[-2 * len(t.samples):]
        assert sampled[0::2] == [["mark", *["flush"] * k, "mark", "sync"]] * len(t.samples)
        assert sampled[1::2] == [["mark", *["flush", "step"] * k, "mark", "sync"]] * len(t.samples)
    assert t.median == pytest.approx(1e-4)  # the flushes' own time is not the call's


def test_an_unreported_l2_gets_a_flush_above_every_current_parts():
    gpu = FakeGpu(l2_bytes=0)
    build_sampler(gpu, gpu.step, "graph", "cold", 1e-3)
    assert gpu.flush_sizes == [cuda_timing.UNKNOWN_L2_FLUSH_BYTES]


def test_a_step_that_cannot_be_captured_is_refused_with_a_reason_never_timed_another_way():
    gpu = FakeGpu(capture_error=RuntimeError("operation not permitted when stream is capturing\nmore"))
    with pytest.raises(TimingUnsupported) as refused:
        time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", **QUICK)
    assert refused.value.method == "graph"
    assert str(refused.value) == ("cannot be timed by the graph method: its CUDA graph capture failed "
                                  "(RuntimeError: operation not permitted when stream is capturing)")
    assert "replay" not in gpu.log and gpu.log.count("step") == 2 + 3  # warm-up and estimate only
    # launch never captures, so the same step is timed by it
    assert time_step(gpu.step, "cuda", gpu=gpu, method="launch", cache="warm", **QUICK).method == "launch"


def test_the_capture_error_named_is_the_first_of_its_chain():
    try:
        try:
            raise ValueError("the step synchronised")
        except ValueError:
            raise RuntimeError("capture invalidated") from None
    except RuntimeError as exc:
        chained = exc
    chained.__cause__ = ValueError("the step synchronised")
    with pytest.raises(TimingUnsupported, match=r"\(ValueError: the step synchronised\)"):
        Sampler(FakeGpu(capture_error=chained), lambda: None, "graph", None, 1)


def test_out_of_memory_while_capturing_is_the_points_oom_not_a_refusal():
    gpu = FakeGpu(capture_error=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    with pytest.raises(torch.OutOfMemoryError):
        build_sampler(gpu, gpu.step, "graph", "warm", 1e-3)


def test_the_sampler_is_kept_only_when_asked_and_knows_the_kept_median():
    gpu = FakeGpu()
    kept = time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", keep_sampler=True, **QUICK)
    assert kept.sampler is not None and kept.sampler.per_call_s == kept.median
    kept.sampler.close()
    with pytest.raises(RuntimeError, match="closed"):
        kept.sampler.measure()
    assert time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", **QUICK).sampler is None


def test_unknown_methods_and_cache_states_are_refused():
    gpu = FakeGpu()
    with pytest.raises(ValueError, match="unknown timing method 'fast'"):
        build_sampler(gpu, gpu.step, "fast", "warm", 1e-3)
    with pytest.raises(ValueError, match="unknown cache state 'hot'"):
        build_sampler(gpu, gpu.step, "graph", "hot", 1e-3)


def test_noisy_windows_are_measured_again_with_the_same_graph():
    gpu = FakeGpu(sample_factors=(1.0, 1.0, 1.5, 1.0, 2.0))  # every sample's interval, in turn
    t = time_step(gpu.step, "cuda", gpu=gpu, method="graph", cache="warm", max_spread=0.05, max_attempts=3,
                  **QUICK)
    assert t.attempts == 3 and t.spread > 0.05 and len(gpu.graphs) == 1


# -- on a real GPU ---------------------------------------------------------------------------------------------

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@NEEDS_CUDA
@pytest.mark.parametrize("method, cache", [("graph", "warm"), ("graph", "cold"), ("launch", "warm"),
                                           ("launch", "cold")])
def test_torch_gpu_times_a_forward_and_a_backward(method, cache):
    x = torch.randn(2048, 2048, device="cuda", requires_grad=True)
    grad = torch.randn(2048, 2048, device="cuda")

    def fwd_bwd():
        x.grad = None
        out = (x @ x).relu()
        out.backward(grad)
        return out

    for step in (lambda: x.detach() @ x.detach(), fwd_bwd):
        t = time_step(step, "cuda", method=method, cache=cache, warmup_s=0.05, min_time_s=0.05, min_samples=5)
        assert t.method == method and 0 < t.median < 0.05 and t.calls_per_sample >= 1
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.gpu
@NEEDS_CUDA
def test_torch_gpu_refuses_a_step_that_syncs_and_keeps_working():
    x = torch.randn(1024, device="cuda")
    with pytest.raises(TimingUnsupported, match="graph method"):
        time_step(lambda: float(x.sum()), "cuda", method="graph", cache="warm", warmup_s=0.0, min_time_s=0.01)
    assert float((x * 2).sum()) == pytest.approx(2 * float(x.sum()))  # the device is usable after the failure
