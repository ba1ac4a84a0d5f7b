"""CPU claims: each CPU a fastformer-bench process times on is held by it alone, machine-wide.

Two runs (or a run and a gate) timing on one CPU while another idled came out 2x slow and still "ok": each CPU
has a lock file (pidlock) under ``CPU_LOCK_DIR``, and a measuring process holds the locks of the CPUs it is
pinned to for its lifetime.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastformer_bench import pidlock
from fastformer_bench.measure.threads import pin_within

#: one lock file per CPU, shared by every fastformer-bench process of this machine
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


def _holders(held_by: dict[int, str]) -> str:
    return ", ".join(f"CPU {cpu} held by pid {pid}" for cpu, pid in sorted(held_by.items()))


def claim_cpus(count: int, *, pin: bool = True, wait_s: float = 900.0,
               say: Callable[[str], None] = print) -> list[int] | None:
    """Hold ``count`` CPUs no other fastformer-bench process holds, the idlest first, and pin this process there.

    When every CPU is held, this waits (saying so) up to ``wait_s``, then raises ValueError. ``say`` gets one line
    naming the CPUs taken and any held by others. None (nothing pinned) where no CPU would be left over or the
    OS cannot pin.
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
            if cpu not in _held_cpu_locks:
                try:
                    _held_cpu_locks[cpu] = pidlock.acquire(CPU_LOCK_DIR / f"cpu{cpu}.lock", mode=0o666)
                except pidlock.LockHeld as held:
                    held_by[cpu] = held.holder
                    continue
            taken.append(cpu)
        if len(taken) == count:
            break
        for cpu in taken:  # not enough: give back what this round took, so two waiters cannot deadlock
            pidlock.release(_held_cpu_locks.pop(cpu))
        if time.monotonic() > deadline:
            raise ValueError(f"no {count} CPU(s) free of other fastformer-bench processes after {wait_s:g} s "
                             f"({_holders(held_by)}).")
        if not waited:
            say(f"fastformer-bench: waiting for a CPU: {_holders(held_by)}")
            waited = True
        time.sleep(1.0)
    if pin:
        pin_within(taken, allowed)
    others = f"; {_holders(held_by)}" if held_by else ""
    say(f"fastformer-bench: timing on CPU {', '.join(map(str, sorted(taken)))}{others}")
    return sorted(taken)
