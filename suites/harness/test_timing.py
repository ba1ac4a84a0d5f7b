"""measure.timing: sample counts, batching of short calls, deadlines, thread control, summary statistics."""

import gc
import time

import numpy as np
import pytest
import torch

from fastformer_bench.measure.timing import (
    Timing,
    configure_allocator,
    configure_threads,
    gpu_clock_state,
    time_first_call,
    time_step,
)

FAST = {"warmup_s": 0.02, "min_time_s": 0.2, "min_samples": 10}


def _sleeper(seconds):
    def step():
        time.sleep(seconds)
    return step


def test_sleep_median_close_to_the_sleep():
    t = time_step(_sleeper(0.005), "cpu", **FAST)
    assert isinstance(t, Timing) and t.method == "perf_counter"
    # sleep never returns early; the generous upper bound absorbs scheduler latency on a busy machine
    assert 0.005 <= t.median < 0.015
    assert len(t.samples) >= 10 and len(t.samples) <= 100


def test_summary_is_the_percentiles_of_the_samples():
    t = time_step(_sleeper(0.002), "cpu", **FAST)
    p20, p50, p80 = np.percentile(t.samples, [20, 50, 80])
    assert (t.p20, t.median, t.p80) == pytest.approx((p20, p50, p80))
    assert t.p20 <= t.median <= t.p80
    assert t.warmup_calls >= 2


def test_short_calls_are_batched_and_divided():
    calls = []
    t = time_step(lambda: calls.append(1), "cpu", **FAST)
    assert t.calls_per_sample > 1
    # every sample is per call: a list append takes well under a microsecond, a batch would take far more
    assert t.median < 1e-5
    assert len(calls) >= t.warmup_calls + t.calls_per_sample * len(t.samples)


def test_long_calls_get_one_call_per_sample():
    t = time_step(_sleeper(0.03), "cpu", warmup_s=0.0, min_time_s=0.1, min_samples=5)  # 20 ms target
    assert t.calls_per_sample == 1 and len(t.samples) >= 5


def test_max_time_caps_sampling():
    start = time.monotonic()
    t = time_step(_sleeper(0.01), "cpu", warmup_s=0.0, min_time_s=100.0, min_samples=1000, max_samples=5000,
                  max_time_s=0.3)
    assert time.monotonic() - start < 5.0
    assert 1 <= len(t.samples) < 1000


def test_max_samples_caps_sampling():
    t = time_step(_sleeper(0.001), "cpu", warmup_s=0.0, min_time_s=0.05, min_samples=2, max_samples=3)
    assert len(t.samples) <= 3


def test_deadline_raises_timeout_and_restores_gc():
    assert gc.isenabled()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        time_step(_sleeper(0.02), "cpu", warmup_s=0.0, min_time_s=10.0, deadline=time.monotonic() + 0.15)
    assert time.monotonic() - start < 5.0
    assert gc.isenabled()


def test_deadline_already_past_raises_in_warmup():
    with pytest.raises(TimeoutError):
        time_step(_sleeper(0.001), "cpu", deadline=time.monotonic() - 1)


def test_gc_is_off_while_sampling_and_back_on_after():
    seen = []
    time_step(lambda: seen.append(gc.isenabled()), "cpu", **FAST)
    # warm-up calls run with gc on; every sampled call must have run with it off
    assert seen[-1] is False and seen.count(False) > seen.count(True)
    assert gc.isenabled()


def test_bad_sample_bounds_are_rejected():
    with pytest.raises(ValueError):
        time_step(lambda: None, "cpu", min_samples=10, max_samples=5)


def test_time_first_call():
    assert 0.03 <= time_first_call(_sleeper(0.03), "cpu") < 1.0


def test_configure_threads_applies_and_none_keeps():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(None) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        configure_threads(0)


def test_gpu_clock_state_is_empty_without_a_gpu():
    state = gpu_clock_state()
    assert isinstance(state, dict)
    if not torch.cuda.is_available():
        assert state == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_event_timing():
    a = torch.randn(2048, 2048, device="cuda")
    t = time_step(lambda: a @ a, "cuda", **FAST)
    assert t.method == "cuda_event+l2_flush" and t.calls_per_sample == 1
    assert 0 < t.median < 0.1 and len(t.samples) >= 10
    assert {"sm_clock_mhz", "mem_clock_mhz", "throttle_reasons"} <= set(gpu_clock_state())


def test_configure_allocator_applies_glibc_settings_where_glibc():
    import platform

    applied = configure_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied == {"glibc_mallopt": {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1}}
    else:
        assert applied == {}
