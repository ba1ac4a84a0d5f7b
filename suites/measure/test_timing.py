"""measure.timing: sample counts, batching of short calls, deadlines, warm-up, summary statistics."""

import gc
import time

import numpy as np
import pytest
import torch

from fastformer_bench.measure import timing
from fastformer_bench.measure.timing import (
    MAX_SETTLING_CALLS,
    Timing,
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
    assert t.method == "graph" and t.calls_per_sample >= 1 and t.sampler is None
    assert 0 < t.median < 0.1 and len(t.samples) >= 10
    assert {"sm_clock_mhz", "mem_clock_mhz", "throttle_reasons"} <= set(gpu_clock_state())


def _scripted_windows(monkeypatch, spreads, seconds_each=0.0):
    """Replace the CPU sampling window with windows of the given p20-p80 spreads (median 1 ms), in order."""
    made = []

    def window(step, calls, warmup_calls, *args):
        time.sleep(seconds_each)
        half = spreads[len(made)] / 2
        # p20 and p80 of these five (linear interpolation) are 1 -+ half ms: the spread asked for
        samples = [1e-3 * (1 + f * half / 1.05) for f in (-1.25, -1.0, 0.0, 1.0, 1.25)]
        made.append(samples)
        return timing._summarise(samples, calls, warmup_calls, "perf_counter")

    monkeypatch.setattr(timing, "_time_cpu", window)
    return made


def test_noisy_window_is_measured_again_and_the_first_within_target_kept(monkeypatch):
    made = _scripted_windows(monkeypatch, [0.30, 0.02, 0.01])
    t = time_step(lambda: None, "cpu", warmup_s=0, max_spread=0.05, max_attempts=5)
    assert t.attempts == 2 and t.samples == made[1] and t.rejected == [made[0]]
    assert t.spread == pytest.approx(0.02, rel=1e-6)


def test_when_no_window_meets_the_target_the_tightest_is_kept_and_all_are_recorded(monkeypatch):
    made = _scripted_windows(monkeypatch, [0.30, 0.10, 0.20, 0.01])
    t = time_step(lambda: None, "cpu", warmup_s=0, max_spread=0.05, max_attempts=3)
    assert t.attempts == 3 and t.samples == made[1] and t.rejected == [made[0], made[2]]


def test_retries_of_a_batched_step_use_longer_samples(monkeypatch):
    batches = []
    _scripted_windows(monkeypatch, [0.9] * 7)
    scripted = timing._time_cpu

    def recording(step, calls, *args):
        batches.append(calls)
        return scripted(step, calls, *args)

    monkeypatch.setattr(timing, "_time_cpu", recording)
    time_step(_sleeper(0.001), "cpu", warmup_s=0.01, min_time_s=0.1, min_samples=5, max_spread=0.05,
              max_attempts=4)
    first = batches[0]
    assert first > 1 and batches == [first, 2 * first, 4 * first, 4 * first]
    batches.clear()
    time_step(_sleeper(0.03), "cpu", warmup_s=0.01, min_time_s=0.1, min_samples=5, max_spread=0.05,
              max_attempts=3)
    assert batches == [1, 1, 1]  # a call long enough to be its own sample stays one call per sample


def test_without_a_target_one_window_is_measured(monkeypatch):
    _scripted_windows(monkeypatch, [0.9, 0.01])
    t = time_step(lambda: None, "cpu", warmup_s=0, max_attempts=5)
    assert t.attempts == 1 and t.rejected == []


def test_a_retry_never_starts_when_the_deadline_leaves_no_room_for_it(monkeypatch):
    _scripted_windows(monkeypatch, [0.9, 0.01], seconds_each=0.2)
    t = time_step(lambda: None, "cpu", warmup_s=0, max_spread=0.05, max_attempts=5,
                  deadline=time.monotonic() + 0.4)
    assert t.attempts == 1 and t.spread > 0.05  # measured, not a timeout


def test_a_retry_that_overruns_the_deadline_keeps_the_windows_already_measured(monkeypatch):
    made = _scripted_windows(monkeypatch, [0.9, 0.5])
    scripted = timing._time_cpu

    def second_overruns(*args):
        if made:
            raise TimeoutError("timing ran past the point's time limit during sampling.")
        return scripted(*args)

    monkeypatch.setattr(timing, "_time_cpu", second_overruns)
    t = time_step(lambda: None, "cpu", warmup_s=0, max_spread=0.05, max_attempts=5)
    assert t.attempts == 1 and t.samples == made[0]


def test_bad_stability_settings_are_rejected():
    for kwargs in ({"max_attempts": 0}, {"max_spread": 0.0}, {"max_spread": -0.1}):
        with pytest.raises(ValueError):
            time_step(lambda: None, "cpu", **kwargs)


def test_real_windows_carry_their_attempt_count():
    t = time_step(_sleeper(0.002), "cpu", warmup_s=0.01, min_time_s=0.05, min_samples=5, max_spread=1e-9,
                  max_attempts=2)
    assert t.attempts == 2 and len(t.rejected) == 1 and len(t.rejected[0]) >= 5


def _faulting_step(faulting_calls: int):
    """A step whose first ``faulting_calls`` calls touch 16 MiB of fresh memory (its own mapping, kept)."""
    import mmap

    kept = []

    def step():
        if len(kept) < faulting_calls:
            block = mmap.mmap(-1, 2**24)
            np.frombuffer(block, dtype=np.uint8)[::mmap.PAGESIZE] = 1  # one write per page: a fault each
            kept.append(block)
        else:
            kept.append(None)
    return step


def test_warm_up_goes_on_while_calls_still_page_fault():
    t = time_step(_faulting_step(3), "cpu", warmup_s=0, min_time_s=0.001, min_samples=1)
    assert 4 <= t.warmup_calls <= 5  # calls 1-3 fault; the first quiet call ends the warm-up


def test_warm_up_settling_is_capped():
    t = time_step(_faulting_step(10**6), "cpu", warmup_s=0, min_time_s=0.001, min_samples=1, max_samples=1)
    assert t.warmup_calls == 2 + MAX_SETTLING_CALLS
