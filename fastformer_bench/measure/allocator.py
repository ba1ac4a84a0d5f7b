"""The heap of a measuring process: glibc's allocator kept from handing memory back between calls, and the page
faults that tell whether it did."""

from __future__ import annotations

import ctypes
import resource

from fastformer_bench import axes

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _libc():
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


# -- allocator conditions (the allocator axis) ------------------------------------------------------------------
# The heap above is the harness's own ("warm"). A user's plain process gets the C library's defaults, and at large
# N its calls page-fault and zero fresh memory every time (how much slower: docs/measuring.md §6), so a point can
# be measured under another condition, in a child process started with it.

PLAIN, WARM, THP, JEMALLOC, TCMALLOC = "plain", "warm", "thp", "jemalloc", "tcmalloc"
#: plain: the C library's defaults (no mallopt, no allocator environment); warm: configure_allocator, the sweep
#: process's own; thp: plain plus PyTorch's transparent-huge-page allocation of large CPU tensors; jemalloc and
#: tcmalloc: plain with Debian's library preloaded
CONDITIONS = axes.ALLOCATORS
assert CONDITIONS == (PLAIN, WARM, THP, JEMALLOC, TCMALLOC)
#: the condition of a point that does not name one, and of every sweep process
DEFAULT_CONDITION = WARM
#: kept in axes.py, which the report may import (it never reaches into measure/)
PRELOADS, PACKAGES, THP_ENV = axes.ALLOCATOR_PRELOADS, axes.ALLOCATOR_PACKAGES, axes.THP_ENV
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
#: the environment that changes a process's allocator; a condition's child starts without any of it
_ALLOCATOR_ENV = (THP_ENV, "GLIBC_TUNABLES", "LD_PRELOAD")
_ALLOCATOR_ENV_PREFIXES = ("MALLOC_", "JEMALLOC_", "TCMALLOC_")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                 "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_library(soname: str) -> str | None:
    """The path of a shared library by its soname: the dynamic linker's cache (``ldconfig -p``), else the usual
    library directories; None where it is not installed."""
    import os
    import platform
    import shutil
    import subprocess

    machine = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                 if os.path.exists(p)), None)
    if ldconfig is not None:
        try:
            listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            name, _, path = line.strip().partition(" => ")
            if name.split(" ", 1)[0] == soname and (not machine or machine in name) and os.path.exists(path):
                return path
    return next((f"{d}/{soname}" for d in _LIBRARY_DIRS if os.path.exists(f"{d}/{soname}")), None)


def thp_mode(setting: str = THP_SETTING) -> str | None:
    """The kernel's transparent-huge-page mode (always | madvise | never), None where it has none."""
    try:
        with open(setting) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def unsupported_reason(condition: str, *, setting: str = THP_SETTING) -> str | None:
    """Why ``condition`` cannot be had on this machine (one sentence), or None."""
    if condition not in CONDITIONS:
        return f"unknown allocator {condition!r}; known: {', '.join(CONDITIONS)}."
    if condition in (PLAIN, WARM) and _libc() is None:
        return f"the {condition} allocator condition is glibc's, and this C library is not glibc"
    if condition == THP:
        mode = thp_mode(setting)
        if mode not in ("madvise", "always"):
            return (f"transparent huge pages are {'unavailable' if mode is None else mode!r} in this kernel "
                    f"({setting}), so torch's {THP_ENV}=1 cannot get them")
    if condition in PRELOADS and find_library(PRELOADS[condition]) is None:
        return f"{PRELOADS[condition]} is not installed (Debian: apt-get install {PACKAGES[condition]})"
    return None



def condition_env(condition: str, base) -> dict:
    """The environment a child measured under ``condition`` starts with: ``base`` without anything that changes
    its allocator (THP_MEM_ALLOC_ENABLE, GLIBC_TUNABLES, LD_PRELOAD, MALLOC_*), plus the condition's own."""
    env = {k: v for k, v in base.items() if k not in _ALLOCATOR_ENV and not k.startswith(_ALLOCATOR_ENV_PREFIXES)}
    if condition == THP:
        env[THP_ENV] = "1"
    if condition in PRELOADS:
        path = find_library(PRELOADS[condition])
        if path is not None:
            env["LD_PRELOAD"] = path
    return env


def mapped_libraries(maps: str = "/proc/self/maps") -> set[str]:
    """The files mapped into this process (/proc/self/maps); empty where unreadable."""
    try:
        with open(maps) as f:
            return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return set()


def preloaded(condition: str, maps: str = "/proc/self/maps") -> str | None:
    """The mapped path of ``condition``'s preloaded library in this process, None where it is not loaded.

    Maps name the file itself: libtcmalloc_minimal.so.4 is a link to libtcmalloc_minimal.so.4.5.x, so the
    LD_PRELOAD entries of that soname count through their real paths."""
    import os
    import re

    soname = PRELOADS.get(condition)
    if soname is None:
        return None
    wanted = {os.path.realpath(p) for p in re.split(r"[:\s]+", os.environ.get("LD_PRELOAD", ""))
              if os.path.basename(p) == soname}
    return next((path for path in sorted(mapped_libraries(maps))
                 if path in wanted or os.path.basename(path) == soname), None)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


#: a block above glibc's largest dynamic mmap threshold (32 MiB on 64-bit): its defaults always map it apart
_PROBE_BYTES = 64 * 2**20


def large_blocks_mapped() -> bool | None:
    """Whether glibc serves a large block with its own mmap in this process: True under its defaults, False
    once configure_allocator has turned mmap off (mallinfo2's count of mapped blocks around one 64 MiB malloc,
    never touched, so no page is faulted in); None where the C library is not glibc or has no mallinfo2."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    block = libc.malloc(_PROBE_BYTES)
    if not block:
        return None
    try:
        return libc.mallinfo2().hblks > before
    finally:
        libc.free(block)


def condition_facts(condition: str, applied: dict) -> dict:
    """What a child measured under ``condition`` found in itself, for its record's ``allocator_process``:
    the mallopt settings applied, whether glibc maps large blocks apart, the preloaded library's mapped path
    and torch's THP switch."""
    import os

    return {"glibc_mallopt": applied.get("glibc_mallopt", {}), "large_blocks_mapped": large_blocks_mapped(),
            "preloaded": preloaded(condition), "thp_mem_alloc": os.environ.get(THP_ENV)}
