"""pidlock: one holder at a time, named when it refuses another; a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastformer_bench import pidlock

_HOLD = ("import sys, time\nfrom pathlib import Path\nfrom fastformer_bench import pidlock\n"
         "pidlock.acquire(Path(sys.argv[1]))\nprint('held', flush=True)\ntime.sleep(120)\n")


def _reaped() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    path.parent.mkdir()
    path.write_text(f"{_reaped()}\n")  # its holder ended without removing it (kill -9)
    fd = pidlock.acquire(path)
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        pidlock.release(fd)
    assert path.exists()  # released without its path: the file stays for the next holder
    pidlock.release(pidlock.acquire(path), path)
    assert not path.exists()


def test_a_live_holder_refuses_another_naming_its_pid_and_frees_the_lock_when_killed(tmp_path):
    path = tmp_path / "a.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(pidlock.LockHeld, match=f"held by pid {holder.pid}$") as refused:
            pidlock.acquire(path)
        assert refused.value.holder == str(holder.pid) and refused.value.path == path
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert path.read_text() == f"{holder.pid}\n"  # the kernel freed the lock with its holder, not the file
    pidlock.release(pidlock.acquire(path), path)
