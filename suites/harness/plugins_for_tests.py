"""Deliberately misbehaving implementations, plugged in through FASTFORMER_BENCH_PLUGINS by the harness tests."""

from __future__ import annotations

import os
import time
from fractions import Fraction

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
    return ",".join(f"plugins_for_tests:{name}" for name in ALL.split(","))


# -- deliberately slowed candidates for the gate's self-test --------------------------------------------------
#: the slowdown factor of test_slowdown and test_extra, read once when this module is imported (in each process)
SLOWDOWN_ENV = "FASTFORMER_BENCH_TEST_SLOWDOWN"


def slowdown_factor(text: str) -> Fraction:
    """``text`` (e.g. "1.01") as the exact fraction test_extra works to: 1.01 is 101/100, so test_extra does one
    extra eager call per 100 calls, and only a run of a multiple of 100 calls holds exactly 1.01x the work."""
    factor = Fraction(text).limit_denominator(1000)
    if factor < 1:
        raise ValueError(f"{SLOWDOWN_ENV} must be >= 1, got {factor}.")
    return factor


def calls_for_exact_work(text: str, at_least: int) -> int:
    """The fewest calls, at least ``at_least``, over which test_extra does exactly its factor x the work."""
    denominator = slowdown_factor(text).denominator
    return denominator * -(-at_least // denominator)


_FACTOR = slowdown_factor(os.environ.get(SLOWDOWN_ENV, "1.25"))
_debt = [0]  # extra work owed by test_extra, in units of 1 / denominator of an eager call


def _slowed(x, w, mask=None):
    # Idles (busy, like a slower kernel) for (FACTOR - 1) x this call's own time: every call, every size, is
    # FACTOR x slower in wall time, so the median moves by FACTOR too.
    start = time.perf_counter()
    out = eager_additive_attention(x, w, mask)
    until = start + (time.perf_counter() - start) * float(_FACTOR)
    while time.perf_counter() < until:
        pass
    return out


def _extra(x, w, mask=None):
    # Integer arithmetic (not floats) so that any run of `denominator` calls does exactly FACTOR x the work:
    # deterministic instruction counts when the counted calls are a multiple of the denominator.
    out = eager_additive_attention(x, w, mask)
    _debt[0] += _FACTOR.numerator - _FACTOR.denominator
    while _debt[0] >= _FACTOR.denominator:
        eager_additive_attention(x, w, mask)
        _debt[0] -= _FACTOR.denominator
    return out


SLOWDOWN = Impl(name="test_slowdown", family=ADDITIVE, fn=_slowed,
                description=f"eager, {SLOWDOWN_ENV} (default 1.25) x its wall time")
EXTRA = Impl(name="test_extra", family=ADDITIVE, fn=_extra,
             description=f"eager, {SLOWDOWN_ENV} (default 1.25) x its work over many calls")
