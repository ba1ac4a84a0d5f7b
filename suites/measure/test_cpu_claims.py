"""measure.cpu_claims: a CPU another fastformer-bench process holds is not timed on; one whose holder ended is."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastformer_bench import pidlock
from fastformer_bench.measure import cpu_claims

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs two CPUs to choose between")

# holds the lock of every CPU named after the folder, as another fastformer-bench process would
_HOLD_ALL = ("import sys, time\nfrom pathlib import Path\nfrom fastformer_bench import pidlock\n"
             "for cpu in sys.argv[2:]:\n    pidlock.acquire(Path(sys.argv[1]) / f'cpu{cpu}.lock')\n"
             "print('held', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def own_locks(tmp_path, monkeypatch) -> dict[int, int]:
    """This test's lock folder, and no CPU held by this process yet (the fds are given back after)."""
    held: dict[int, int] = {}
    monkeypatch.setattr(cpu_claims, "CPU_LOCK_DIR", tmp_path)
    monkeypatch.setattr(cpu_claims, "_held_cpu_locks", held)
    yield held
    for fd in held.values():
        pidlock.release(fd)


def test_with_every_cpu_held_elsewhere_the_claim_fails_naming_the_holders(tmp_path, own_locks):
    cpus = sorted(os.sched_getaffinity(0))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_ALL, str(tmp_path), *map(str, cpus)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said: list[str] = []
        named = ", ".join(f"CPU {cpu} held by pid {holder.pid}" for cpu in cpus)
        with pytest.raises(ValueError, match=f"no 1 CPU\\(s\\) free of other fastformer-bench processes after 0 s "
                                             f"\\({named}\\)"):
            cpu_claims.claim_cpus(1, wait_s=0, say=said.append)
        assert said == [] and own_locks == {}
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_cpu_whose_holder_ended_is_claimed(tmp_path, own_locks):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    for cpu in os.sched_getaffinity(0):
        (tmp_path / f"cpu{cpu}.lock").write_text(f"{ended.pid}\n")
    said: list[str] = []
    (cpu,) = cpu_claims.claim_cpus(1, pin=False, wait_s=0, say=said.append)
    assert list(own_locks) == [cpu] and (tmp_path / f"cpu{cpu}.lock").read_text() == f"{os.getpid()}\n"
    assert said == [f"fastformer-bench: timing on CPU {cpu}"]
