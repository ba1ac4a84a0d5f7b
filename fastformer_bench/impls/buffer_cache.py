"""A cache of the large CPU buffers the stream kernels write (forward's out, backward's dx), as CUDA's caching
allocator keeps GPU memory: a buffer nothing uses any more goes back to the cache, not to the operating system,
and the next call that needs the same size gets it with its pages already mapped.

Why: the C library maps every buffer above 32 MiB afresh and unmaps it when freed (glibc's largest dynamic mmap
threshold), so in a plain process each large call faults in and zeroes its outputs before writing them. On the
2-core reference VM that costs about 2.5 times the write itself (384 MiB: 89-92 ms fresh with huge-page advice,
25 ms into a mapped buffer; issue 32), and backward, which writes C times forward's output, pays it C times.

Lifetime: a cached buffer is a tensor made by ``torch.frombuffer`` over a small holder object; torch keeps the
holder alive as long as any tensor or view uses that storage, and the holder's finalizer gives the memory back,
so memory is reused only once nothing can see it. The memory is a private anonymous mapping with huge-page
advice (``MADV_HUGEPAGE``) on its 2 MiB-aligned part; its contents are whatever the last user left, so only
buffers the kernels overwrite entirely are taken from here.

Bound: idle buffers are kept up to ``FASTFORMER_BENCH_STREAM_CACHE_MIB`` MiB (default: an eighth of physical
memory; 0 turns the cache off), oldest unmapped first, checked whenever the cache lends a buffer; ``release()`` unmaps
every idle one (the harness does between points), as does a mapping that fails for lack of memory before its
one retry. Torch's profiler does not see these buffers: ``stats()`` counts them for measure/memory.py.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import mmap
import os
import threading

import torch

#: buffers smaller than this come from torch.empty: the C library reuses its own heap for them
MIN_BYTES = 8 << 20
_HUGE_PAGE = 2 << 20
_ENV = "FASTFORMER_BENCH_STREAM_CACHE_MIB"


def limit_bytes() -> int:
    """The most idle bytes the cache keeps: $FASTFORMER_BENCH_STREAM_CACHE_MIB MiB, else an eighth of RAM."""
    text = os.environ.get(_ENV, "").strip()
    if text:
        try:
            mib = float(text)
        except ValueError:
            raise ValueError(f"{_ENV} must be a number of MiB (0 turns the cache off), got {text!r}.") from None
        if not math.isfinite(mib) or mib < 0:
            raise ValueError(f"{_ENV} must be a finite number of MiB >= 0, got {text!r}.")
        return int(mib * (1 << 20))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError, AttributeError):
        return 1 << 30


@functools.cache
def _holder_type(usable: int) -> type:
    """A ctypes array type of ``usable`` bytes whose instances hand their mapping back to the cache when they die.

    The finalizer only queues the return (a deque append, atomic and lock-free): it can run inside the cache's
    own methods, wherever the garbage collector or a dropped tensor fires, so the bookkeeping is left to them."""
    def __del__(self) -> None:
        try:
            _CACHE.returned.append((self._mapping, self._nbytes, self._window))
        except Exception:  # at interpreter shutdown the cache may already be gone: the OS takes the memory back
            pass

    return type(f"CachedBuffer{usable}", (ctypes.c_char * usable,), {"__del__": __del__})


class _Mapping:
    """One private anonymous mapping, ``usable`` bytes of it starting at the 2 MiB boundary ``address``."""

    def __init__(self, usable: int) -> None:
        self.usable = usable
        self.map = mmap.mmap(-1, usable + _HUGE_PAGE, flags=mmap.MAP_PRIVATE,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        probe = ctypes.c_char.from_buffer(self.map)  # an export only while we read the address
        start = ctypes.addressof(probe)
        del probe
        offset = -start % _HUGE_PAGE
        self.address = start + offset
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self.map.madvise(mmap.MADV_HUGEPAGE, offset, usable)
            except OSError:
                pass  # THP off or refused: 4 KiB pages, still reused

    def close(self) -> None:
        self.map.close()


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._idle: collections.OrderedDict[int, _Mapping] = collections.OrderedDict()  # id -> mapping, oldest first
        self.returned: collections.deque = collections.deque()  # (mapping, nbytes, window) from finalizers
        self.idle_bytes = 0
        self.in_use_bytes = 0
        self.window = 0  # bumped by reset_peak: frees of buffers lent before it do not lower the peak's count
        self.window_bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0

    def settle(self, keep: int | None = None) -> None:
        """Take in the buffers given back since the last call, then unmap the oldest idle ones past ``keep`` bytes
        (None: none). Call with the lock held."""
        while self.returned:
            mapping, nbytes, window = self.returned.popleft()
            self.in_use_bytes -= nbytes
            if window == self.window:
                self.window_bytes -= nbytes
            if mapping is not None:
                self._idle[id(mapping)] = mapping
                self.idle_bytes += mapping.usable
        while keep is not None and self._idle and self.idle_bytes > keep:
            _, oldest = self._idle.popitem(last=False)
            self.idle_bytes -= oldest.usable
            oldest.close()

    def take(self, nbytes: int, limit: int) -> ctypes.Array:
        usable = -(-nbytes // _HUGE_PAGE) * _HUGE_PAGE
        with self._lock:
            self.settle(limit)
            mapping = next((m for m in self._idle.values() if m.usable == usable), None)
            if mapping is not None:
                del self._idle[id(mapping)]
                self.idle_bytes -= usable
                self.hits += 1
            else:
                self.misses += 1
            self.in_use_bytes += nbytes
            self.window_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.window_bytes)
            window = self.window
        try:
            if mapping is None:
                mapping = self._map(usable)
            holder = _holder_type(usable).from_address(mapping.address)
        except BaseException:
            self.returned.append((mapping, nbytes, window))
            raise
        holder._mapping, holder._nbytes, holder._window = mapping, nbytes, window
        return holder

    def _map(self, usable: int) -> _Mapping:
        try:
            return _Mapping(usable)
        except OSError:  # out of memory or address space (the harness caps it): idle buffers first, then again
            with self._lock:
                self.settle(0)
            return _Mapping(usable)


_CACHE = _Cache()


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor for a kernel that writes every element: from the cache where it is
    MIN_BYTES or more and the cache is on, else torch.empty."""
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    if nbytes < MIN_BYTES or not hasattr(mmap, "MAP_PRIVATE"):
        return torch.empty(shape, dtype=dtype)
    limit = limit_bytes()
    if limit == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(_CACHE.take(nbytes, limit), dtype=dtype, count=numel).view(shape)


def release() -> int:
    """Unmap every idle cached buffer; the bytes released."""
    with _CACHE._lock:
        _CACHE.settle()
        before = _CACHE.idle_bytes
        _CACHE.settle(0)
        return before


def stats() -> dict[str, int]:
    """in_use_bytes (lent out now); peak_bytes, the most lent out at once since reset_peak counting only buffers
    lent after it (as torch's profiler ignores frees of blocks allocated before it started); idle_bytes; hits
    and misses."""
    with _CACHE._lock:
        _CACHE.settle()
        return {"in_use_bytes": _CACHE.in_use_bytes, "peak_bytes": _CACHE.peak_bytes,
                "idle_bytes": _CACHE.idle_bytes, "hits": _CACHE.hits, "misses": _CACHE.misses}


def reset_peak() -> None:
    """Start the peak over at 0: buffers lent before now no longer count, lent or given back."""
    with _CACHE._lock:
        _CACHE.settle()
        _CACHE.window += 1
        _CACHE.window_bytes = _CACHE.peak_bytes = 0
