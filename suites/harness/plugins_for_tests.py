"""Deliberately misbehaving implementations, plugged in through FASTFORMER_BENCH_PLUGINS by the harness tests."""

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


WRONG = Impl(name="test_wrong", family=ADDITIVE, fn=_wrong, description="eager off by 1 %")
HUGE = Impl(name="test_huge", family=ADDITIVE, fn=_huge, description="allocates 1 PiB")
SLOW = Impl(name="test_slow", family=ADDITIVE, fn=_slow, description="sleeps 0.25 s per call")
ABORT = Impl(name="test_abort", family=ADDITIVE, fn=_abort, description="kills its process")
TWICE = Impl(name="test_twice", family=ADDITIVE, fn=_twice, description="eager, computed twice")

ALL = "WRONG,HUGE,SLOW,ABORT,TWICE"


def plugin_spec() -> str:
    return ",".join(f"plugins_for_tests:{name}" for name in ALL.split(","))
