"""measure.memory_cap: the address-space cap of a CPU sweep, the room left under it, and what an oom reason says."""

from __future__ import annotations

import resource

import pytest

from fastformer_bench.measure import memory_cap


def test_the_proc_readers_read_this_process_and_machine():
    available = memory_cap.meminfo_kib("MemAvailable")
    if available is None:
        pytest.skip("no /proc/meminfo here")
    assert available > 0 and memory_cap.meminfo_kib("NoSuchField") is None
    assert 0 < memory_cap.process_status_bytes("VmRSS") <= memory_cap.process_status_bytes("VmSize")


def test_the_cap_bounds_the_address_space_and_the_headroom_under_it():
    before = resource.getrlimit(resource.RLIMIT_AS)
    if before[0] != resource.RLIM_INFINITY or memory_cap.meminfo_kib("MemAvailable") is None:
        pytest.skip("needs an uncapped process and /proc/meminfo")
    assert memory_cap.address_space_cap() is None and "address-space cap none" in memory_cap.memory_state()
    try:
        cap = memory_cap.cap_cpu_memory()
        assert cap == memory_cap.address_space_cap() == resource.getrlimit(resource.RLIMIT_AS)[0]
        assert 0 <= memory_cap.memory_headroom_bytes() < cap
        assert memory_cap.memory_state().startswith(f"address-space cap {cap / 2**30:.3g} GiB, VmSize ")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)
