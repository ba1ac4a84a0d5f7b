"""A lock file that names its holder's pid: one process holds it at a time, and a holder that ended frees it.

The lock is an advisory flock, which the kernel releases when its process ends however it ends (kill -9
included): a file left behind by a dead holder is stale, and the next process takes it over, writing its own
pid over the dead one. A live holder's pid is what a refused process names. Pure Python: the results store
uses it too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` is the pid its file names ("unknown" if it names none)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path, self.holder = path, holder


def acquire(path: Path, mode: int = 0o644) -> int:
    """Hold ``path``'s lock (creating it and its folder) and write this process's pid into it; return the open
    file descriptor that holds it (give it to :func:`release`). LockHeld when a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(path, holder) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def release(fd: int, path: Path | None = None) -> None:
    """Give up the lock ``fd`` holds; with ``path``, remove the lock file first, while still holding it."""
    if path is not None:
        path.unlink(missing_ok=True)
    os.close(fd)
