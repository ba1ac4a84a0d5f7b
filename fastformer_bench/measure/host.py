"""The host: how a measuring process is set up, and what it reads of the machine's state while it measures.

``prepare_process`` is the one set-up every measuring process runs (the CLI's ``run``, ``run --isolate``'s
workers, the gate's workers): thread count, CPU affinity, allocator settings and the memory cap. The Linux
readers (/proc/meminfo, /proc/self/status, /proc/stat, /proc/pressure/cpu) live here too, so no meter parses
them on its own.
"""

from __future__ import annotations

import os
import resource
import time

import torch

#: share of the memory available at start a CPU sweep may address; beyond it allocations fail (status oom)
#: instead of waking the kernel's OOM killer, which would end the whole sweep
CPU_MEMORY_SHARE = 0.85


def prepare_process(threads: int | None = None, *, pin_cpus: bool = False, allocator: bool = True,
                    cap_memory: bool = False) -> dict:
    """Set this process up for measuring; return what was applied (run.json's threads/allocator/affinity).

    ``allocator`` keeps freed heap memory in the process (configure_allocator); ``cap_memory`` bounds the
    address space so an oversized CPU allocation fails as out-of-memory (cap_cpu_memory).
    """
    applied = {"threads": configure_threads(threads)}
    applied["allocator"] = configure_allocator() if allocator else {}
    applied["cpu_affinity"] = configure_affinity(applied["threads"]) if pin_cpus else None
    applied["memory_cap_bytes"] = cap_cpu_memory() if cap_memory else None
    return applied


def configure_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (and the inter-op count while it can still be set); return it."""
    if threads is None:
        return torch.get_num_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}.")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # only settable before the first inter-op parallel work; intra-op is what the kernels use
    return torch.get_num_threads()


def configure_affinity(threads: int) -> list[int] | None:
    """Pin this process (and the threads it starts) to its last ``threads`` allowed CPUs; return them.

    A pinned process keeps its caches and is not migrated between cores mid-sample; the CPUs left over take
    the OS, interrupts and the harness's own bookkeeping. Nothing is pinned (None) where the OS has no
    affinity call or no CPU would be left over.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}.")
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= threads:
        return None
    chosen = allowed[-threads:]
    os.sched_setaffinity(0, chosen)
    return chosen


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _libc():
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def configure_allocator() -> dict:
    """Keep freed heap memory in the process (glibc), so every call does not page-fault fresh memory in.

    By default glibc serves blocks above a threshold with fresh mmap()s and returns them on free: each call
    of a step with large intermediates then pays the kernel's page faults and zeroing again, which on this
    2-core VM doubled some timings and made them vary with memory pressure. With mmap off and the heap never
    trimmed (M_TRIM_THRESHOLD = -1 is SIZE_MAX: a finite threshold still returned the 4 GiB of a softmax_naive
    N = 8192 call to the OS every call, a million page faults and 2.7x the steady time), memory freed by one
    call is reused by the next, as with jemalloc/tcmalloc; ``release_heap`` hands it back between points.
    Returns the settings applied ({} where the C library is not glibc), for run.json.
    """
    libc = _libc()
    if libc is None:
        return {}
    applied = {}
    for name, param, value in (("M_MMAP_MAX", _M_MMAP_MAX, 0), ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, -1)):
        if libc.mallopt(param, value) == 1:
            applied[name] = value
    return {"glibc_mallopt": applied} if applied else {}


def release_heap() -> bool:
    """Return the free heap memory to the OS (glibc malloc_trim); True if any was released.

    Called between points: a point's heap then starts from what it needs, not from the largest point so far,
    and its warm-up (not its samples) pays the page faults of growing it again.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def meminfo_kib(key: str) -> int | None:
    """A field of /proc/meminfo in KiB (e.g. MemAvailable), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_status_bytes(key: str) -> int | None:
    """A size field of /proc/self/status (VmSize, VmRSS, VmHWM) in bytes, None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_rss_high_water_mark() -> bool:
    """Reset VmHWM to the current resident set (Linux clear_refs); False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where the OS does not count them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cap_cpu_memory(share: float = CPU_MEMORY_SHARE) -> int | None:
    """Limit this process's address space so an oversized CPU allocation raises instead of being OOM-killed."""
    available = meminfo_kib("MemAvailable")
    if available is None:
        return None
    limit = (process_status_bytes("VmSize") or 0) + int(available * 1024 * share)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def psi_cpu_some() -> dict[str, float]:
    """The "some" line of Linux's CPU pressure (PSI) as {"avg10": ..., "total": ...}; {} where there is none."""
    try:
        with open("/proc/pressure/cpu") as f:
            return {key: float(value) for key, value in (item.split("=") for item in f.readline().split()[1:])}
    except (OSError, ValueError):
        return {}


def cpu_contention() -> dict:
    """Load average and CPU pressure (PSI): other work on the machine is the main source of CPU timing noise."""
    load = _load_average()
    psi = psi_cpu_some()
    pressure = psi.get("avg10")
    return {"load_avg_1m": None if load is None else load[0], "cpu_pressure_some_avg10": pressure}


def run_delay_ns() -> int | None:
    """Nanoseconds this process's threads spent runnable but waiting for a CPU (Linux schedstat), None if unknown.

    Unlike machine-wide pressure, this is the waiting of *this* process: another task on its CPU raises it, load
    on the other CPUs does not.
    """
    total, found = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
                found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total if found else None


def contention_counters() -> dict:
    """Cumulative counters of CPU contention now: this process's run-queue wait, PSI's "some" stall time and the
    hypervisor's steal ticks.

    Read before and after a point's sampling and turned into shares by :func:`contention_since`; a counter the
    OS lacks (no PSI, no schedstat, not Linux) is simply absent.
    """
    counters: dict = {"wall_s": time.monotonic()}
    wait = run_delay_ns()
    if wait is not None:
        counters["wait_ns"] = wait
    psi = psi_cpu_some()
    if "total" in psi:
        counters["stall_us"] = int(psi["total"])
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        counters["steal_ticks"], counters["all_ticks"] = ticks[7], sum(ticks)
    except (OSError, ValueError, IndexError):
        pass
    return counters


def contention_since(start: dict, threads: int = 1) -> dict:
    """Shares of the time since ``start``: ``cpu_wait``, this process's ``threads`` waiting for their CPU while
    runnable; ``cpu_pressure``, some task anywhere waiting for a CPU (PSI); ``cpu_steal``, stolen by the hypervisor.

    A steady competitor on the timed CPU slows every sample alike, so a point can be tight and still inflated:
    ``cpu_wait`` sees exactly that competitor, ``cpu_pressure`` the machine as a whole. None where a counter is
    missing.
    """
    end = contention_counters()
    wall = end["wall_s"] - start["wall_s"]
    shares: dict = {"cpu_wait": None, "cpu_pressure": None, "cpu_steal": None}
    if wall > 0 and "wait_ns" in start and "wait_ns" in end:
        waited = (end["wait_ns"] - start["wait_ns"]) / 1e9 / wall / max(1, threads)
        shares["cpu_wait"] = round(min(1.0, max(0.0, waited)), 4)
    if wall > 0 and "stall_us" in start and "stall_us" in end:
        shares["cpu_pressure"] = round(min(1.0, (end["stall_us"] - start["stall_us"]) / 1e6 / wall), 4)
    if "all_ticks" in start and "all_ticks" in end and end["all_ticks"] > start["all_ticks"]:
        stolen = (end["steal_ticks"] - start["steal_ticks"]) / (end["all_ticks"] - start["all_ticks"])
        shares["cpu_steal"] = round(stolen, 4)
    return shares


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None
