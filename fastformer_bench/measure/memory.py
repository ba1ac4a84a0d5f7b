"""Peak memory one call needs beyond what was allocated before it.

CUDA: the caching allocator's peak counter, reset just before the call.
CPU: the running total of torch's own allocations and frees during the call, as the profiler records them
(``profile_memory=True``); its maximum is the peak. Memory outside torch's allocator (oneDNN/MKL scratch,
Python objects) is not seen, except the stream kernels' cached output buffers (impls/buffer_cache.py), whose
peak lent out during the call is added (an upper bound where both peak at once; the stream kernels allocate
little else through torch). Where the profiler cannot say, Linux's high-water mark of the resident set
(VmHWM, reset through /proc/self/clear_refs, after glibc hands its free heap pages back) stands in; it
counts the whole process and only pages the call touches, so it is coarser.

Both paths call the step once first and measure the second call: lazy one-time allocations (cuBLAS workspaces,
compiled kernels' buffers) belong to the process, not to the call. One asymmetry remains: a step that drops
the previous call's results first (make_step's fwd_bwd resets .grad) gets them back as credit on CUDA, whose
counter is a net total, while the CPU profiler ignores frees of blocks allocated before it started.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

import torch

from fastformer_bench.impls import buffer_cache
from fastformer_bench.measure import Meter, Subject, allocator, memory_cap

# Kineto (the profiler's backend) logs every profiler start/stop to stderr at its default level, which
# buries a sweep's output; level 6 is above its highest (USDT = 5). Read when the profiler first starts.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def peak_memory(step: Callable[[], object], device: str, *, warmup: bool = True) -> tuple[int | None, str]:
    """(peak bytes the call allocated beyond what was live before it, method name); (None, reason) if unknown."""
    if warmup:
        step()
        gc.collect()
    if str(device).startswith("cuda"):
        return _cuda_peak(step, torch.device(device)), "cuda_caching_allocator_peak"
    try:
        return _profiler_peak(step), "torch_profiler_memory"
    except Exception:
        pass  # the profiler's event tree is an experimental API: fall back rather than lose the point
    peak = _vmhwm_peak(step)
    return (peak, "vmhwm_rss") if peak is not None else (None, "unavailable")


def _cuda_peak(step: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return max(0, peak)


def _allocation_events(nodes) -> list[tuple[int, int]]:
    """(time ns, signed bytes) of every CPU allocation/free under the profiler's event tree."""
    found: list[tuple[int, int]] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if str(node.tag).endswith("Allocation"):
            fields = node.extra_fields
            if getattr(getattr(fields, "device", None), "type", "cpu") == "cpu":
                found.append((node.start_time_ns, int(fields.alloc_size)))
    return found


def _profiler_peak(step: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    buffer_cache.reset_peak()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        # A marker allocation proves the profiler sees allocations at all, so an empty stream after it means
        # a call that allocates nothing, not a profiler that records nothing.
        marker = torch.empty(1, dtype=torch.uint8)
        out = step()
        del out  # free inside the window so the event stream balances; the peak already saw it
    del marker
    events = sorted(_allocation_events(prof.profiler.kineto_results.experimental_event_tree()))
    if not events or events[0][1] <= 0:
        raise RuntimeError("the profiler recorded no allocation events")
    running = peak = 0
    for _, size in events[1:]:
        running += size
        peak = max(peak, running)
    return peak + buffer_cache.stats()["peak_bytes"]


def _vmhwm_peak(step: Callable[[], object]) -> int | None:
    # glibc's free heap pages and the idle cached buffers go back to the OS first, so the call must touch fresh
    # pages that RSS can see.
    allocator.release_heap()
    buffer_cache.release()
    rss = memory_cap.process_status_bytes("VmRSS")
    if not memory_cap.reset_rss_high_water_mark():
        return None
    out = step()
    del out
    high = memory_cap.process_status_bytes("VmHWM")
    return None if high is None or rss is None else max(0, high - rss)


def _measure(subject: Subject) -> dict:
    peak, method = peak_memory(subject.step, subject.problem.device)
    return {"peak_bytes": peak, "memory_method": method}


METER = Meter(name="memory", fields=("peak_bytes", "memory_method"), measure=_measure)
