"""Deliberately misbehaving implementations, plugged in through FASTFORMER_BENCH_PLUGINS by the tests (the
``test_impls`` fixture of suites/conftest.py). The gate self-test's slowed candidates are
fastformer_bench/tools/slowed_impls.py."""

from __future__ import annotations

import os
import time

import torch

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.additive_eager import eager_additive_attention


def _wrong(x, w, mask=None):
    return eager_additive_attention(x, w, mask) * 1.01  # a 1 % error: far above every tolerance


def _huge(x, w, mask=None):
    # 2**50 bytes: no machine has it, so the allocator refuses (a real CPU out-of-memory, not a mock).
    torch.empty(2**48, dtype=torch.float32)
    return eager_additive_attention(x, w, mask)


def _slow(x, w, mask=None):
    time.sleep(0.25)
    return eager_additive_attention(x, w, mask)


def _abort(x, w, mask=None):
    os.abort()


def _twice(x, w, mask=None):
    eager_additive_attention(x, w, mask)
    return eager_additive_attention(x, w, mask)


#: a file test_threads_seen appends "<pid> <torch threads>" to on every call (unset: it writes nothing)
THREADS_LOG_ENV = "FASTFORMER_BENCH_TEST_THREADS_LOG"


def _threads_seen(x, w, mask=None):
    # What the process really ran at: an isolated worker's record could say k threads while it computed at another
    path = os.environ.get(THREADS_LOG_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()} {torch.get_num_threads()}\n")
    return eager_additive_attention(x, w, mask)


WRONG = Impl(name="test_wrong", family=ADDITIVE, fn=_wrong, description="eager off by 1 %")
HUGE = Impl(name="test_huge", family=ADDITIVE, fn=_huge, description="allocates 1 PiB")
SLOW = Impl(name="test_slow", family=ADDITIVE, fn=_slow, description="sleeps 0.25 s per call")
ABORT = Impl(name="test_abort", family=ADDITIVE, fn=_abort, description="kills its process")
TWICE = Impl(name="test_twice", family=ADDITIVE, fn=_twice, description="eager, computed twice")
THREADS_SEEN = Impl(name="test_threads_seen", family=ADDITIVE, fn=_threads_seen,
                    description="eager, logging its thread count")

ALL = "WRONG,HUGE,SLOW,ABORT,TWICE,THREADS_SEEN"


def plugin_spec() -> str:
    return ",".join(f"testkit.plugin_faulty_impls:{name}" for name in ALL.split(","))

