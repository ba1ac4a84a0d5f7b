"""The host: how a measuring process is set up, and what it reads of the machine's state while it measures.

``prepare_process`` is the one set-up every measuring process runs (the CLI's ``run``, ``run --isolate``'s
workers, the gate's workers): thread count, CPU affinity, allocator settings and the memory cap. The Linux
readers (/proc/meminfo, /proc/self/status, /proc/stat, /proc/pressure/cpu) live here too, so no meter parses
them on its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

#: share of the memory available at start a CPU sweep may address; beyond it allocations fail (status oom)
#: instead of waking the kernel's OOM killer, which would end the whole sweep
CPU_MEMORY_SHARE = 0.85


def prepare_process(threads: int | None = None, *, pin_cpus: bool = False, allocator: bool = True,
                    cap_memory: bool = False, cpus: int | None = None) -> dict:
    """Set this process up for measuring; return what was applied (run.json's threads/allocator/affinity).

    ``allocator`` keeps freed heap memory in the process (configure_allocator); ``cap_memory`` bounds the
    address space so an oversized CPU allocation fails as out-of-memory (cap_cpu_memory). ``cpus``: how many
    CPUs ``pin_cpus`` claims when the run's points use more threads than ``threads`` (the threads axis), so a
    2-thread point is not timed on one pinned CPU; never fewer than the process's own threads.
    """
    allocator_applied = configure_allocator() if allocator else {}  # before the threads: see its docstring
    applied = {"threads": configure_threads(threads), "allocator": allocator_applied}
    applied["cpu_affinity"] = _claim_for_run(applied["threads"], cpus or 0) if pin_cpus else None
    applied["memory_cap_bytes"] = cap_cpu_memory() if cap_memory else None
    return applied


def _claim_for_run(threads: int, most: int) -> list[int] | None:
    """Pin the run to ``threads`` claimed CPUs; points at more threads (up to ``most``) widen for their duration.

    Where ``most`` CPUs can be held with one left over, all of them are held and the run is pinned to the last
    ``threads``; else (the threads axis on a 2-core machine) only ``threads`` are held, and a 2-thread point
    also runs on the highest-numbered other CPU, unheld (the contention check sees a neighbour there).
    Claiming ``most`` there would pin nothing at all: the 1-thread points of the cpu study then floated between
    both cores (run.json's cpu_affinity was null).
    """
    if most > threads:
        held = claim_cpus(most, pin=False, say=_to_stderr)
        if held is not None:
            _pin_within(held[-threads:], held)
            return held[-threads:]
    return claim_cpus(threads, say=_to_stderr)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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


@contextlib.contextmanager
def threads_set(threads: int | None) -> Iterator[int]:
    """torch's intra-op thread count at ``threads`` inside the block (None: left as it is), restored after; yields
    the count in force. A point of the threads axis runs this way in whatever process measures it; in a process
    pinned to fewer CPUs than ``threads`` (claim_cpus), every thread's affinity widens to that many for the block."""
    before = torch.get_num_threads()
    with widened(threads):
        if threads is not None and threads != before:
            torch.set_num_threads(threads)
        try:
            yield torch.get_num_threads()
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


@contextlib.contextmanager
def widened(threads: int | None) -> Iterator[None]:
    """Inside the block a pinned process (claim_cpus) runs on at least ``threads`` CPUs, every thread of it and
    any process it starts (an isolated point's worker inherits the mask); narrowed back after."""
    narrow = _widen(threads)
    try:
        yield
    finally:
        if narrow is not None:
            _pin_all_threads(narrow)


#: the CPUs a pinned process may widen to (claim_cpus; empty: never pinned): a point or a roof at more threads
#: than the pinned CPUs runs on as many of these for its duration (threads_set)
_room: list[int] = []


def _pin_within(cpus: list[int], room: list[int]) -> None:
    _room[:] = sorted(room)
    _pin_all_threads(cpus)


def _pin_all_threads(cpus: Iterable[int]) -> None:
    """Set the affinity of every thread of this process, not only the caller's: a thread of torch's OpenMP pool
    keeps the mask it had, so narrowing and widening the caller alone left a later 2-thread point's second
    thread on the first one's CPU (seen on the 2-core VM)."""
    cpus = set(cpus)
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except (OSError, ValueError):
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # a thread that ended meanwhile


def _widen(threads: int | None) -> list[int] | None:
    """Widen a pinned process to ``threads`` CPUs (its own first, then the highest-numbered others of its room);
    the mask to go back to after, or None when nothing changed."""
    if threads is None or not _room or not hasattr(os, "sched_getaffinity"):
        return None
    current = sorted(os.sched_getaffinity(0))
    extra = _extra_cpus(current, threads)
    if not extra:
        return None
    _pin_all_threads(current + extra)
    return current


def _extra_cpus(current: list[int], threads: int) -> list[int]:
    """The CPUs of the room a pinned process adds to ``current`` to run ``threads`` threads: the highest-numbered
    first (the OS favours low CPUs for its own work); none when ``current`` is enough or nothing was pinned."""
    return [cpu for cpu in reversed(_room) if cpu not in current][: max(0, threads - len(current))]


def check_thread_counts(counts: Iterable[int | None], cores: int | None = None) -> None:
    """ValueError (one sentence) for a thread count above this machine's logical cores: more threads than cores
    would time the threads queueing for each other, not the implementation."""
    cores = cores or os.cpu_count()
    too_many = sorted({c for c in counts if c is not None and cores is not None and c > cores})
    if too_many:
        raise ValueError(f"threads {', '.join(map(str, too_many))} exceed this machine's {cores} logical cores.")


def say_threads(problems: Iterable, threads: int, pinned: list[int] | None, say=None) -> None:
    """One line naming the thread counts of a run whose points name the threads axis, and the CPUs they run on
    (the claimed ones, or the whole affinity the OS schedules them over)."""
    counts = sorted({p.threads or threads for p in problems})
    if all(p.threads is None for p in problems):
        return  # as before the axis: claim_cpus names the pinned CPU
    cpus = pinned or (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [])
    where = f"pinned to CPU {', '.join(map(str, cpus))}" if pinned else \
        f"on CPU {', '.join(map(str, cpus)) or '(unknown)'}, not pinned"
    extra = _extra_cpus(pinned or [], max(counts))
    if pinned and extra:
        where += f"; {max(counts)}-thread points also on CPU {', '.join(map(str, sorted(extra)))}"
    (say or _to_stderr)(f"fastformer-bench: points at {', '.join(map(str, counts))} thread(s), {where}")


#: one advisory lock file per CPU, shared by every fastformer-bench process of this machine
CPU_LOCK_DIR = Path(tempfile.gettempdir()) / "fastformer-bench-cpus"
_held_cpu_locks: dict[int, int] = {}  # cpu -> open file descriptor, held for this process's lifetime


def _idle_shares(seconds: float = 0.2) -> dict[int, float]:
    """Each CPU's idle share over a short look at /proc/stat ({} where it cannot be read)."""
    def read() -> dict[int, tuple[int, int]]:
        found = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *ticks = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    values = [int(t) for t in ticks[:8]]
                    found[int(name[3:])] = (values[3] + values[4], sum(values))
        return found
    try:
        before = read()
        time.sleep(seconds)
        after = read()
    except (OSError, ValueError, IndexError):
        return {}
    return {cpu: (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1])
            for cpu in before if cpu in after}


def _try_lock(cpu: int) -> tuple[int | None, str]:
    """(an fd holding CPU ``cpu``'s lock, "") or (None, the holder's pid)."""
    CPU_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(CPU_LOCK_DIR / f"cpu{cpu}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, ""


def _holders(held_by: dict[int, str]) -> str:
    return ", ".join(f"CPU {cpu} held by pid {pid}" for cpu, pid in sorted(held_by.items()))


def claim_cpus(count: int, *, pin: bool = True, wait_s: float = 900.0, say=print) -> list[int] | None:
    """Hold ``count`` CPUs no other fastformer-bench process holds, the idlest first, and pin this process there.

    Two runs (or a run and a gate) timing on one CPU while another idles came out 2x slow and still "ok": each
    CPU has an advisory lock (released by the kernel when its holder ends, however it ends). When every CPU is
    held, this waits (saying so) up to ``wait_s``, then raises ValueError. ``say`` gets one line naming the CPUs
    taken and any held by others. None (nothing pinned) where no CPU would be left over or the OS cannot pin.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"threads must be a positive integer, got {count!r}.")
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= count:
        return None
    deadline, waited = time.monotonic() + wait_s, False
    while True:
        idle = _idle_shares()
        # the idlest first; among equals the highest number (the OS favours low CPUs for its own work)
        order = sorted(allowed, key=lambda cpu: (-round(idle.get(cpu, 0.0), 1), -cpu))
        taken, held_by = [], {}
        for cpu in order:
            if len(taken) == count:
                break
            if cpu in _held_cpu_locks:
                taken.append(cpu)
                continue
            fd, holder = _try_lock(cpu)
            if fd is None:
                held_by[cpu] = holder
            else:
                _held_cpu_locks[cpu] = fd
                taken.append(cpu)
        if len(taken) == count:
            break
        for cpu in taken:  # not enough: give back what this round took, so two waiters cannot deadlock
            os.close(_held_cpu_locks.pop(cpu))
        if time.monotonic() > deadline:
            raise ValueError(f"no {count} CPU(s) free of other fastformer-bench processes after {wait_s:g} s "
                             f"({_holders(held_by)}).")
        if not waited:
            say(f"fastformer-bench: waiting for a CPU: {_holders(held_by)}")
            waited = True
        time.sleep(1.0)
    if pin:
        _pin_within(taken, allowed)
    others = f"; {_holders(held_by)}" if held_by else ""
    say(f"fastformer-bench: timing on CPU {', '.join(map(str, sorted(taken)))}{others}")
    return sorted(taken)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


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

    One arena (M_ARENA_MAX = 1): when an allocation fails (a point out of memory under cap_cpu_memory), glibc
    retries it in a secondary arena and leaves the thread there for good, and a secondary arena maps and unmaps
    every block above 64 MiB whatever M_MMAP_MAX says. Every later point then page-faulted its large blocks in on
    every call: after one softmax_naive point ran out of memory, the cpu study's fwd_bwd points past the
    last-level cache ran 2.4-3.9x slower (stream N = 65536: 131 075 faults and 328 ms a call, against 0 and 77 ms
    before the failure). With the main arena the only one, the retry stays there.
    Set before the process's threads first allocate: glibc fixes its arena limit when it first needs one.
    Returns the settings applied ({} where the C library is not glibc), for run.json.
    """
    libc = _libc()
    if libc is None:
        return {}
    applied = {}
    for name, param, value in (("M_ARENA_MAX", _M_ARENA_MAX, 1), ("M_MMAP_MAX", _M_MMAP_MAX, 0),
                               ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, -1)):
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


def memory_state() -> str:
    """This process's address-space cap, size and resident set and the machine's available memory, in GiB: what
    an out-of-memory reason needs to tell a point too large for the machine from a process or moment short of
    room (the cpu study once stored a 4 GiB point oom that ran ok alone minutes later)."""
    def gib(value: int | None) -> str:
        return "?" if value is None else f"{value / 2**30:.3g} GiB"

    cap = address_space_cap()
    available = meminfo_kib("MemAvailable")
    return (f"address-space cap {gib(cap) if cap is not None else 'none'}, VmSize "
            f"{gib(process_status_bytes('VmSize'))}, VmRSS {gib(process_status_bytes('VmRSS'))}, MemAvailable "
            f"{gib(None if available is None else available * 1024)}")


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


def address_space_cap() -> int | None:
    """This process's address-space limit in bytes (cap_cpu_memory), None where it has none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def memory_headroom_bytes(share: float = CPU_MEMORY_SHARE) -> int | None:
    """Bytes this process may still allocate: below its address-space cap if it has one, else a share of the
    memory available now; None where neither can be read."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = process_status_bytes("VmSize")
        return None if used is None else max(0, soft - used)
    available = meminfo_kib("MemAvailable")
    return None if available is None else int(available * 1024 * share)


def cpu_mhz() -> float | None:
    """The CPUs' mean current clock (MHz) as /proc/cpuinfo reports it, None where it does not."""
    try:
        with open("/proc/cpuinfo") as f:
            found = [float(line.split(":", 1)[1]) for line in f if line.lower().startswith("cpu mhz")]
    except (OSError, ValueError, IndexError):
        return None
    return round(sum(found) / len(found), 1) if found else None


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
