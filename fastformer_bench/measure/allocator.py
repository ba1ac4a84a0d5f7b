"""The heap of a measuring process: glibc's allocator kept from handing memory back between calls, and the page
faults that tell whether it did."""

from __future__ import annotations

import resource

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


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where the OS does not count them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
