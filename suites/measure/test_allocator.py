"""measure.allocator: glibc keeps freed heap memory in the process, hands it back between points, and keeps large
blocks reused after an allocation fails."""

import numpy as np
import pytest

from fastformer_bench.measure.allocator import configure_allocator, release_heap


def test_configure_allocator_applies_glibc_settings_where_glibc():
    import platform

    applied = configure_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        # M_TRIM_THRESHOLD -1: never trim
        assert applied == {"glibc_mallopt": {"M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}}
    else:
        assert applied == {}


def test_release_heap_returns_freed_memory_where_glibc():
    import platform

    configure_allocator()
    block = np.ones(2**25)  # 256 MiB from the heap (mmap is off)
    del block
    released = release_heap()
    assert released is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


# A process set up as `run` sets itself up (one arena, mmap off, a capped address space) meets an allocation that
# fails, then allocates and frees a 256 MiB block four times; it prints the page faults per block.
_AFTER_FAILED_ALLOCATION = """
import resource, torch
from fastformer_bench.measure.allocator import minor_faults
from fastformer_bench.measure.process import prepare_process
prepare_process(1, cap_memory=True)
cap = resource.getrlimit(resource.RLIMIT_AS)[0]
try:
    torch.empty(cap // 4, dtype=torch.float32)
    raise SystemExit("an allocation of the whole cap succeeded")
except RuntimeError:
    pass
def faults_per_block():
    before = minor_faults()
    for _ in range(4):
        torch.ones(2**26)
    return (minor_faults() - before) / 4
for _ in range(3):  # a heap that grows settles: the first blocks extend it (their pages fault in once)
    faults_per_block()
print(faults_per_block())
"""


def test_a_failed_allocation_leaves_large_blocks_reused_where_glibc():
    # glibc retries a failed allocation in a secondary arena and keeps the thread there; that arena maps and
    # unmaps every large block, so every later call of every later point page-faulted its memory in again
    # (the cpu study's fwd_bwd points 2.4-3.9x slow after one out-of-memory point). Counted in page faults, not
    # time: a busy machine moves neither.
    import platform
    import subprocess
    import sys

    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc's arenas only")
    done = subprocess.run([sys.executable, "-c", _AFTER_FAILED_ALLOCATION], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    faults = float(done.stdout.split()[-1])
    pages = 2**28 // 4096
    assert faults < pages / 10, f"{faults:.0f} page faults per reused 256 MiB block ({pages} pages in it)"


# A user's script under a given environment: whether glibc serves a 64 MiB block with its own mmap, and the free
# bytes its heap keeps after a 64 MiB tensor is freed (mallinfo2: the allocator's own books, which no kernel
# reclaim of idle pages moves, where page-fault counts on this VM swung 0-12,288 per block run to run).
_HEAP = """
import json, torch
from fastformer_bench.measure.allocator import _libc, _Mallinfo2, large_blocks_mapped
libc = _libc()
libc.mallinfo2.restype = _Mallinfo2
torch.ones(2**24)
print(json.dumps({"mapped": large_blocks_mapped(), "kept": libc.mallinfo2().fordblks}))
"""


@pytest.mark.parametrize("setting", ["environment", "plain"])
def test_the_warm_remedy_typed_as_environment_keeps_freed_blocks_as_the_harness_does(setting):
    # The report tells a user to get the warm heap with axes.REMEDY_ENV["warm"] (glibc's tunables, read at
    # start-up) where the harness calls mallopt: the one-liner must turn glibc's own mmaps off and keep the block.
    import json
    import os
    import platform
    import subprocess
    import sys

    from fastformer_bench.axes import REMEDY_ENV

    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc's tunables only")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    if setting == "environment":
        env.update(REMEDY_ENV["warm"])
    done = subprocess.run([sys.executable, "-c", _HEAP], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    heap = json.loads(done.stdout.strip().splitlines()[-1])
    if setting == "environment":
        assert heap["mapped"] is False and heap["kept"] >= 2**26, f"{REMEDY_ENV['warm']} left glibc {heap}"
    else:  # the control: glibc's defaults map the block and hand it back on free
        assert heap["mapped"] is True and heap["kept"] < 2**26, heap
