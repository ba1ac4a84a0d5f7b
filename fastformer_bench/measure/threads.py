"""A measuring process's threads: torch's thread count, and the CPUs every thread of the process runs on.

A process pinned to claimed CPUs (cpu_claims) widens to more of them for a point or a roof at more threads than
it holds (``threads_set``, ``widened``), and narrows back after.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import torch


def to_stderr(line: str) -> None:
    """The default ``say`` of the process set-up: one line on stderr, flushed."""
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


def pin_within(cpus: list[int], room: list[int]) -> None:
    """Pin every thread of this process to ``cpus``; ``room`` is where it may widen to (threads_set)."""
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


def say_threads(problems: Iterable, threads: int, pinned: list[int] | None,
                say: Callable[[str], None] | None = None) -> None:
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
    (say or to_stderr)(f"fastformer-bench: points at {', '.join(map(str, counts))} thread(s), {where}")
