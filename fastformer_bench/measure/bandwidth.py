"""The memory system's copy bandwidth right after a point past the last-level cache is timed: its same-time roof.

run.json's roofs are measured at the start and the end of a run. A shared host whose memory bandwidth sags for
minutes in between (another tenant streaming memory) makes every call timed then slow alike: the spread stays
small, the CPU-contention check sees nothing (no time slice was taken), and the point is stored three times
slower than it runs. A copy past the cache, at the point's thread count, right after its timing measures what
the memory system gave at that time: a sweep measures a point again when it reads well below the sweep's typical
copy, and the report places each such point against it beside the run's roof and names those it finds below.
"""

from __future__ import annotations

import functools

from fastformer_bench.measure import Meter, Subject

#: a copy buffer this many times the last-level cache (and at least MIN_COPY_BYTES): DRAM, not cache, is timed
CACHE_MULTIPLE = 4
MIN_COPY_BYTES = 64 * 2**20


@functools.cache
def last_level_cache_bytes() -> int | None:
    from fastformer_bench.measure.env import cpu_caches

    return max(cpu_caches().values(), default=None)


def _input_bytes(subject: Subject) -> int:
    return sum(t.numel() * t.element_size() for t in subject.inputs.leaves)


def _applies(subject: Subject) -> bool:
    llc = last_level_cache_bytes()
    return subject.problem.device == "cpu" and llc is not None and _input_bytes(subject) > llc


def _measure(subject: Subject) -> dict:
    import torch

    from fastformer_bench.measure.env import copy_bandwidth

    nbytes = max(CACHE_MULTIPLE * (last_level_cache_bytes() or 0), MIN_COPY_BYTES)
    try:
        # at the thread count in force: measure_point has set the point's own
        return {"copy_bytes_per_s_now": copy_bandwidth("cpu", nbytes=nbytes)}
    except (MemoryError, torch.OutOfMemoryError):
        return {"copy_bytes_per_s_now": None}  # no room for the copy: the point's own timing stands


METER = Meter(name="bandwidth", fields=("copy_bytes_per_s_now",), measure=_measure, applies=_applies)
