"""Timing of one step: warm-up, repeated samples, robust summary (median, p20, p80).

CPU: ``time.perf_counter`` around a batch of calls, the Python garbage collector off while sampling, the batch
size chosen so a sample is long enough for the timer and scheduler noise to average out (method ``perf_counter``).
CUDA: k calls per sample between CUDA events, replayed from a CUDA graph (``graph``) or enqueued from Python with
one sync per sample (``launch``), the L2 warm or overwritten before every call (``cold``): measure/cuda_timing.py.

Stability: on a shared machine (a VM whose host runs other tenants) a step's speed drifts by 10-50 % over
seconds as neighbours load the shared L3 cache and memory bus; no setting inside the guest removes that. With
``max_spread`` set, a sampling window whose p20-p80 spread exceeds it is measured again (up to
``max_attempts`` windows, a batched step's samples 2x then 4x longer): the first window within the target
is kept, else the tightest one (runner.run_sweep may also revisit a point still noisy at the end of the
sweep). Every rejected window's raw samples stay in the result, so the selection is visible: a re-measured
point reports a quiet window, and its median may sit below what a loaded machine gives by up to the drift.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fastformer_bench import axes
from fastformer_bench.measure import Meter, Subject, cuda_timing, nvml
from fastformer_bench.measure.allocator import minor_faults
from fastformer_bench.measure.contention import contention_counters, contention_since

#: makes the Gpu a CUDA point is timed on (tests put a fake here)
GPU: Callable[[str], cuda_timing.Gpu] = cuda_timing.TorchGpu


@dataclass
class Timing:
    samples: list[float]  # seconds per call, one entry per sample
    median: float
    p20: float
    p80: float
    calls_per_sample: int
    warmup_calls: int
    method: str
    rejected: list[list[float]] = field(default_factory=list)  # raw samples of the windows not kept
    #: the CUDA sampler the samples came from, where the caller asked to keep it (time_step's keep_sampler)
    sampler: cuda_timing.Sampler | None = field(default=None, repr=False, compare=False)

    @property
    def attempts(self) -> int:
        """Sampling windows measured: the kept one and every rejected one (see the module docstring)."""
        return len(self.rejected) + 1

    @property
    def spread(self) -> float:
        """(p80 - p20) / median: the relative width of the middle 60 % of samples."""
        return (self.p80 - self.p20) / self.median if self.median > 0 else math.nan


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _sync(device: str) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def time_first_call(step: Callable[[], object], device: str) -> float:
    """Seconds of one synchronised call (the first call of a compiled step includes its compilation)."""
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


@contextmanager
def _gc_paused():
    """No pending garbage at the start, and no collector pause inside a sample; restored even on TimeoutError."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_deadline(deadline: float | None, phase: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"timing ran past the point's time limit during {phase}.")


def _summarise(samples: list[float], calls: int, warmup_calls: int, method: str) -> Timing:
    p20, median, p80 = (float(v) for v in np.percentile(samples, [20, 50, 80]))
    return Timing(samples=list(samples), median=median, p20=p20, p80=p80, calls_per_sample=calls,
                  warmup_calls=warmup_calls, method=method)


#: extra warm-up calls allowed while a CPU step still page-faults its heap in (see _warm_up)
MAX_SETTLING_CALLS = 8


def _warm_up(step: Callable[[], object], device: str, warmup_s: float, deadline: float | None,
             sync: Callable[[], None] | None = None) -> list[float]:
    """Call until warmup_s has passed (at least twice: the first call pays lazy initialisation).

    On a CPU, also until a call no longer page-faults (at most MAX_SETTLING_CALLS more): a step with large
    intermediates grows and re-arranges the heap over its first few calls (seen: N = 8192 softmax_naive
    faulted 4 GiB in its 3rd and 2 GiB in its 4th call, then none), and those calls are not steady state.
    """
    durations: list[float] = []
    faults: list[int] = []
    settling_calls = 0
    start = time.perf_counter()
    while True:
        before = minor_faults()
        t0 = time.perf_counter()
        step()
        if sync is not None:
            sync()
        else:
            _sync(device)
        durations.append(time.perf_counter() - t0)
        faults.append(minor_faults() - before)
        _check_deadline(deadline, "warm-up")
        if len(durations) < 2 or time.perf_counter() - start < warmup_s:
            continue
        if _is_cuda(device) or faults[-1] <= max(16, faults[0] // 200) or settling_calls >= MAX_SETTLING_CALLS:
            return durations
        settling_calls += 1


def _enough(n: int, elapsed: float, min_time_s: float, min_samples: int, max_samples: int,
            max_time_s: float) -> bool:
    if n >= max_samples or (n >= 1 and elapsed >= max_time_s):
        return True
    return n >= min_samples and elapsed >= min_time_s


def check_sampling(min_samples: int, max_samples: int, max_spread: float | None, max_attempts: int) -> None:
    """ValueError (one sentence naming the setting) unless the sampling bounds make sense."""
    if not 1 <= min_samples <= max_samples:
        raise ValueError(f"need 1 <= min_samples <= max_samples, got {min_samples} and {max_samples}.")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}.")
    if max_spread is not None and not max_spread > 0:
        raise ValueError(f"max_spread must be a positive fraction (0.05 = 5 %), got {max_spread}.")


def time_step(step: Callable[[], object], device: str, *, warmup_s: float = 0.2, min_time_s: float = 1.0,
              min_samples: int = 10, max_samples: int = 100, max_time_s: float = 30.0,
              max_spread: float | None = None, max_attempts: int = 1, deadline: float | None = None,
              method: str | None = None, cache: str | None = None, gpu: cuda_timing.Gpu | None = None,
              keep_sampler: bool = False) -> Timing:
    """Time ``step`` on ``device``; ``deadline`` is a ``time.monotonic()`` value past which TimeoutError is raised.

    With ``max_spread`` set, up to ``max_attempts`` sampling windows are measured until one has a p20-p80
    spread within it (module docstring). A retry starts only if the deadline leaves room for a window as long
    as the last one, and one that overruns it is dropped: retrying never turns a measured point into a timeout.
    On CUDA, ``method`` (graph | launch) and ``cache`` (warm | cold) choose how (axes.CUDA_DEFAULTS where None),
    ``gpu`` is the device (GPU(device) where None), and ``keep_sampler`` keeps the sampler open in the result
    for more calls of the same kind (the caller closes it); cuda_timing.TimingUnsupported where the method cannot
    time the step.
    """
    check_sampling(min_samples, max_samples, max_spread, max_attempts)
    if _is_cuda(device):
        return _time_step_cuda(step, device, warmup_s=warmup_s, min_time_s=min_time_s, min_samples=min_samples,
                               max_samples=max_samples, max_time_s=max_time_s, max_spread=max_spread,
                               max_attempts=max_attempts, deadline=deadline, method=method, cache=cache, gpu=gpu,
                               keep_sampler=keep_sampler)
    warm = _warm_up(step, device, warmup_s, deadline)
    # The later half of the warm-up is closest to steady state (allocator and caches settled).
    per_call = float(np.median(warm[len(warm) // 2:]))
    calls = max(1, int(math.ceil(min_time_s / min_samples / per_call))) if per_call > 0 else 1

    def window(tried: int) -> Timing:
        # A batched step whose window was noisy gets longer samples next time (2x, then 4x the calls):
        # call-to-call noise (cache contention) then averages out within a sample.
        batch = calls * min(4, 2 ** tried) if calls > 1 else 1
        return _time_cpu(step, batch, len(warm), min_time_s, min_samples, max_samples, max_time_s, deadline)

    return _windows(window, max_spread, max_attempts, deadline)


def _windows(window: Callable[[int], Timing], max_spread: float | None, max_attempts: int,
             deadline: float | None) -> Timing:
    """Sampling windows (``window(windows tried so far)``) until one is within ``max_spread``; the kept one."""
    windows: list[Timing] = []
    while True:
        started = time.monotonic()
        try:
            windows.append(window(len(windows)))
        except TimeoutError:
            if not windows:
                raise
            break  # a retry that overran keeps the windows already measured
        took = time.monotonic() - started
        if max_spread is None or windows[-1].spread <= max_spread or len(windows) >= max_attempts:
            break
        if deadline is not None and time.monotonic() + 1.5 * took > deadline:
            break
    # Sampling stops at the first window within the target, so the tightest window is that one when it exists.
    kept = min(windows, key=lambda w: w.spread)
    rejected = [w.samples for w in windows if w is not kept]
    return replace(kept, rejected=rejected)


def _time_step_cuda(step: Callable[[], object], device: str, *, warmup_s: float, min_time_s: float,
                    min_samples: int, max_samples: int, max_time_s: float, max_spread: float | None,
                    max_attempts: int, deadline: float | None, method: str | None, cache: str | None,
                    gpu: cuda_timing.Gpu | None, keep_sampler: bool) -> Timing:
    gpu = gpu if gpu is not None else GPU(device)
    method = method or axes.CUDA_DEFAULTS["timing"]
    cache = cache or axes.CUDA_DEFAULTS["cache"]
    warm = _warm_up(step, device, warmup_s, deadline, sync=gpu.synchronize)
    sampler = cuda_timing.build_sampler(gpu, step, method, cache, cuda_timing.sample_target_s(min_time_s, min_samples))
    try:
        _check_deadline(deadline, f"the {method} method's set-up")

        def window(tried: int) -> Timing:
            # The same k in every window: a graph is captured once, and its samples are device time already.
            return _time_cuda(sampler, len(warm), min_time_s, min_samples, max_samples, max_time_s, deadline)

        timed = _windows(window, max_spread, max_attempts, deadline)
    except BaseException:
        sampler.close()
        raise
    if not keep_sampler:
        sampler.close()
        return timed
    sampler.per_call_s = timed.median
    return replace(timed, sampler=sampler)


def _time_cpu(step: Callable[[], object], calls: int, warmup_calls: int, min_time_s: float, min_samples: int,
              max_samples: int, max_time_s: float, deadline: float | None) -> Timing:
    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        return (time.perf_counter() - t0) / calls

    samples = _samples(sample, min_time_s, min_samples, max_samples, max_time_s, deadline)
    return _summarise(samples, calls, warmup_calls, "perf_counter")


def _time_cuda(sampler: cuda_timing.Sampler, warmup_calls: int, min_time_s: float, min_samples: int,
               max_samples: int, max_time_s: float, deadline: float | None) -> Timing:
    samples = _samples(sampler.sample, min_time_s, min_samples, max_samples, max_time_s, deadline)
    return _summarise(samples, sampler.calls, warmup_calls, sampler.method)


def _samples(sample: Callable[[], float], min_time_s: float, min_samples: int, max_samples: int,
             max_time_s: float, deadline: float | None) -> list[float]:
    """One window's samples (seconds per call), until the window has enough of them or its time is up."""
    samples: list[float] = []
    with _gc_paused():
        begin = time.perf_counter()
        while not _enough(len(samples), time.perf_counter() - begin, min_time_s, min_samples, max_samples,
                          max_time_s):
            samples.append(sample())
            _check_deadline(deadline, "sampling")
    return samples


def _throttle_reasons(pynvml, handle) -> list[str]:
    getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)  # the newer name
    mask = (getter or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)(handle)
    prefix = "nvmlClocksThrottleReason"
    names = []
    for attr in dir(pynvml):
        if attr.startswith(prefix) and attr not in (prefix + "All", prefix + "None"):
            bit = getattr(pynvml, attr)
            if isinstance(bit, int) and bit and (mask & bit) == bit:
                names.append(attr[len(prefix):])
    return sorted(set(names))


def gpu_clock_state(device_index: int = 0) -> dict:
    """NVML's current SM and memory clocks (MHz) and the active clock-limiting reasons; {} when unavailable."""
    with nvml.session() as pynvml:
        if pynvml is None:
            return {}
        try:
            handle = nvml.handle(pynvml, device_index)
        except Exception:
            return {}
        readers = {
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "throttle_reasons": lambda: _throttle_reasons(pynvml, handle),
        }
        state: dict = {}
        for key, read in readers.items():
            try:
                state[key] = read()
            except Exception:
                state[key] = None  # one query unsupported on this board should not hide the others
        return state


def _timed(subject: Subject) -> dict:
    settings, problem = subject.settings, subject.problem
    device = problem.device
    subject.release()  # a measurement taken again drops the first one's graph before capturing its own
    before = contention_counters()
    cuda = _is_cuda(device)
    measured = time_step(subject.step, device, warmup_s=settings.warmup_s, min_time_s=settings.min_time_s,
                         min_samples=settings.min_samples, max_samples=settings.max_samples,
                         max_spread=settings.max_spread, max_attempts=settings.max_attempts,
                         deadline=subject.deadline, method=problem.method("timing") if cuda else None,
                         cache=problem.method("cache") if cuda else None,
                         # the energy meter repeats these very calls (measure/energy.py)
                         keep_sampler=cuda and bool(settings.measure_energy))
    subject.sampler = measured.sampler
    found = {"time_median": measured.median, "time_p20": measured.p20, "time_p80": measured.p80,
             "samples": list(measured.samples), "calls_per_sample": measured.calls_per_sample,
             "timing_method": measured.method, "timing_attempts": measured.attempts,
             "rejected_samples": measured.rejected,
             "contention": contention_since(before, threads=torch.get_num_threads())}
    if device == "cuda":
        found["gpu_clocks"] = gpu_clock_state()
    return found


def contention_share(contention: dict) -> float | None:
    """The share of the timing the timed threads lost to other tasks on their CPU or to the hypervisor.

    Machine-wide pressure stands in only where this process's own run-queue wait is unknown.
    """
    own = [contention.get(k) for k in ("cpu_wait", "cpu_steal") if contention.get(k) is not None]
    if contention.get("cpu_wait") is None and contention.get("cpu_pressure") is not None:
        own.append(contention["cpu_pressure"])
    return max(own) if own else None


def _measure(subject: Subject) -> dict:
    found = _timed(subject)
    limit = subject.settings.max_contention
    share = contention_share(found["contention"])
    if limit is None or share is None or share <= limit:
        return found
    # Measured again: a competitor that comes and goes is often gone seconds later. The first measurement's
    # samples stay in the record, as a noisy window's do.
    try:
        again = _timed(subject)
    except TimeoutError:
        again = found  # no time left to look again: what was measured stands, and stays contended
    else:
        again["rejected_samples"] = [*again["rejected_samples"], found["samples"], *found["rejected_samples"]]
        again["timing_attempts"] += found["timing_attempts"]
    share = contention_share(again["contention"])
    again["contention"] = {**again["contention"], "share": share, "limit": limit, "remeasured": True,
                           "contended": share is not None and share > limit}
    return again


METER = Meter(name="time", measure=_measure,
              fields=("time_median", "time_p20", "time_p80", "samples", "calls_per_sample", "timing_method",
                      "timing_attempts", "rejected_samples", "contention", "gpu_clocks"))
