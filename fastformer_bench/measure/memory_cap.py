"""How much memory a measuring process may take: the address-space cap that makes an oversized CPU allocation fail
as out-of-memory, and the Linux readers of the process's size and the machine's available memory."""

from __future__ import annotations

import resource

#: share of the memory available at start a CPU sweep may address; beyond it allocations fail (status oom)
#: instead of waking the kernel's OOM killer, which would end the whole sweep
CPU_MEMORY_SHARE = 0.85


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
