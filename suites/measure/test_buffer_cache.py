"""impls/buffer_cache.py: large buffers come back for reuse only when no tensor or view can see them any more,
the idle ones stay within the limit, the limit's setting is checked, and the counters measure/memory.py adds
follow what is lent out."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from testkit.smaps import huge_page_advised

from fastformer_bench.impls import buffer_cache

MiB = 1 << 20
SIZE = (3, buffer_cache.MIN_BYTES // 4 // 3 + 5)  # above the threshold, not a multiple of the 2 MiB rounding
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.delenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", raising=False)
    buffer_cache.release()
    yield
    gc.collect()
    buffer_cache.release()


def test_a_buffer_is_reused_only_after_its_last_view_dies():
    first = buffer_cache.empty(SIZE, torch.float32)
    address = first.data_ptr()
    view = first[1, 7:]
    del first
    gc.collect()
    assert buffer_cache.stats()["idle_bytes"] == 0  # the view still holds the storage
    while_viewed = buffer_cache.empty(SIZE, torch.float32)
    assert while_viewed.data_ptr() != address
    view.fill_(1.0)
    while_viewed.fill_(2.0)
    assert torch.all(view == 1.0)  # no aliasing between the two
    del view
    gc.collect()
    assert buffer_cache.stats()["idle_bytes"] > 0
    again = buffer_cache.empty(SIZE, torch.float32)
    assert again.data_ptr() == address and again.shape == SIZE and again.is_contiguous()


def test_other_dtypes_and_a_different_size_get_their_own_memory():
    a = buffer_cache.empty(SIZE, torch.float32)
    a_address = a.data_ptr()
    del a
    b = buffer_cache.empty((SIZE[0] * 4, SIZE[1]), torch.bfloat16)  # twice the bytes: no match
    assert b.dtype == torch.bfloat16 and b.data_ptr() != a_address
    b.fill_(3.0)
    assert float(b.float().sum()) == 3.0 * b.numel()


def test_small_buffers_and_a_zero_limit_bypass_the_cache(monkeypatch):
    before = buffer_cache.stats()
    small = buffer_cache.empty((16, 16), torch.float32)
    monkeypatch.setenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", "0")
    large = buffer_cache.empty(SIZE, torch.float32)
    after = buffer_cache.stats()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
    large.resize_(1)  # torch's own storage: resizable, unlike a cached one
    del small


def test_idle_buffers_stay_within_the_limit(monkeypatch):
    mapped = -(-SIZE[0] * SIZE[1] * 4 // (2 * MiB)) * 2 * MiB  # each buffer's mapping: whole 2 MiB pages
    monkeypatch.setenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", str(2.5 * mapped / MiB))
    held = [buffer_cache.empty(SIZE, torch.float32) for _ in range(3)]
    del held
    gc.collect()
    buffer_cache.empty((1024,), torch.float32)  # below the threshold: lends nothing, so trims nothing
    assert buffer_cache.stats()["idle_bytes"] == 3 * mapped
    again = buffer_cache.empty(SIZE, torch.float32)  # lending trims the idle ones to the limit first (two left)
    assert buffer_cache.stats()["idle_bytes"] == mapped  # ... and lends one of those
    del again
    assert buffer_cache.release() > 0 and buffer_cache.stats()["idle_bytes"] == 0


def test_a_buffer_freed_inside_the_cache_waits_for_its_bookkeeping():
    """A finalizer can fire while the cache's own code runs (the collector, a tensor dropped mid-call): it only
    queues the return, and the cache takes it in at its next use."""
    t = buffer_cache.empty(SIZE, torch.float32)
    buffer_cache.stats()  # settles anything an earlier test left queued
    with buffer_cache._CACHE._lock:
        idle_before, queued = dict(buffer_cache._CACHE._idle), len(buffer_cache._CACHE.returned)
        del t
        gc.collect()
        assert buffer_cache._CACHE._idle == idle_before and len(buffer_cache._CACHE.returned) == queued + 1
    assert buffer_cache.stats()["idle_bytes"] > 0 and not buffer_cache._CACHE.returned


def test_a_mapping_that_fails_for_memory_releases_the_idle_ones_and_retries(monkeypatch):
    idle = buffer_cache.empty(SIZE, torch.float32)
    del idle
    other = (SIZE[0], SIZE[1] * 2)  # no idle match: a new mapping
    real, calls = buffer_cache._Mapping, []

    def refuse_once(usable):
        calls.append(buffer_cache._CACHE.idle_bytes)
        if len(calls) == 1:
            raise OSError(12, "Cannot allocate memory")
        return real(usable)

    monkeypatch.setattr(buffer_cache, "_Mapping", refuse_once)
    t = buffer_cache.empty(other, torch.float32).fill_(1.0)
    assert calls[0] > 0 and calls[1] == 0  # the idle buffer was unmapped before the retry
    assert float(t.sum()) == t.numel()
    before = buffer_cache.stats()
    monkeypatch.setattr(buffer_cache, "_Mapping", lambda usable: (_ for _ in ()).throw(OSError(12, "no")))
    with pytest.raises(OSError):
        buffer_cache.empty((SIZE[0], SIZE[1] * 3), torch.float32)
    assert buffer_cache.stats()["in_use_bytes"] == before["in_use_bytes"]  # a failed take lends nothing


@pytest.mark.parametrize("text", ["lots", "-1", "nan", "inf"])
def test_a_bad_limit_is_one_clear_value_error(monkeypatch, text):
    monkeypatch.setenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", text)
    with pytest.raises(ValueError, match="FASTFORMER_BENCH_STREAM_CACHE_MIB"):
        buffer_cache.empty(SIZE, torch.float32)


def test_counters_follow_what_is_lent_out():
    """The peak counts buffers lent since reset_peak; freeing one lent before it (as make_step's fwd_bwd drops the
    last call's gradients) does not lower that count, as torch's profiler ignores such frees."""
    nbytes = SIZE[0] * SIZE[1] * 4
    earlier = buffer_cache.empty(SIZE, torch.float32)
    base = buffer_cache.stats()["in_use_bytes"]
    buffer_cache.reset_peak()
    del earlier
    gc.collect()
    a = buffer_cache.empty(SIZE, torch.float32)
    b = buffer_cache.empty(SIZE, torch.float32)
    assert buffer_cache.stats()["in_use_bytes"] == base + nbytes
    del a, b
    gc.collect()
    stats = buffer_cache.stats()
    assert stats["in_use_bytes"] == base - nbytes and stats["peak_bytes"] == 2 * nbytes
    buffer_cache.reset_peak()
    assert buffer_cache.stats()["peak_bytes"] == 0


@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text() or not Path("/proc/self/smaps").exists(),
                    reason="this kernel does not allow madvise huge pages")
def test_cached_memory_carries_huge_page_advice():
    t = buffer_cache.empty(SIZE, torch.float32)
    address = t.data_ptr()
    assert address % (2 * MiB) == 0  # starts on a huge-page boundary
    assert huge_page_advised(address) and huge_page_advised(address + t.numel() * 4 - 1)
