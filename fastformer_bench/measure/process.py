"""The one set-up every measuring process runs (the CLI's ``run``, ``run --isolate``'s workers, a cluster job,
the gate's workers): thread count, CPU claims and pinning, allocator settings and the memory cap."""

from __future__ import annotations

from fastformer_bench.measure.allocator import configure_allocator
from fastformer_bench.measure.cpu_claims import claim_cpus
from fastformer_bench.measure.memory_cap import cap_cpu_memory
from fastformer_bench.measure.threads import configure_threads, pin_within, to_stderr


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
        held = claim_cpus(most, pin=False, say=to_stderr)
        if held is not None:
            pin_within(held[-threads:], held)
            return held[-threads:]
    return claim_cpus(threads, say=to_stderr)
