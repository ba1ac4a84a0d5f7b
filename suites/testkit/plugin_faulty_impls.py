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
    return ",".join(f"testkit.plugin_faulty_impls:{name}" for name in ALL.split(","))


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


#: every factor SLOWDOWN_ENV names ("1.05" or "1.05,1.10,1.25"): test_slowdown is slowed by the first,
#: test_slowdown_2 by the second and so on (a name past the list takes the last), so one gate can measure
#: several slowdowns against the same unchanged points
_FACTORS = [slowdown_factor(text) for text in os.environ.get(SLOWDOWN_ENV, "1.25").split(",")]
_FACTOR = _FACTORS[0]
_debt = [0]  # extra work owed by test_extra, in units of 1 / denominator of an eager call


def slowdown_name(index: int) -> str:
    """The name of the test implementation slowed by the ``index``-th factor (0: test_slowdown)."""
    return "test_slowdown" if index == 0 else f"test_slowdown_{index + 1}"


def _slowed_by(factor: Fraction):
    def slowed(x, w, mask=None):
        # Busy (like a slower kernel) for (factor - 1) x this call's own time, on the clock the gate reads: the
        # thread's CPU time at one thread (workers/wall.py), wall time otherwise. Spinning to a wall-clock deadline
        # while the gate read CPU time made the slowdown smaller whenever the VM took the CPU away mid-spin
        # (1.031x measured for 1.05x).
        clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
        start = clock()
        out = eager_additive_attention(x, w, mask)
        until = start + (clock() - start) * float(factor)
        while clock() < until:
            pass
        return out

    return slowed


def _extra(x, w, mask=None):
    # Integer arithmetic (not floats) so that any run of `denominator` calls does exactly FACTOR x the work:
    # deterministic instruction counts when the counted calls are a multiple of the denominator.
    out = eager_additive_attention(x, w, mask)
    _debt[0] += _FACTOR.numerator - _FACTOR.denominator
    while _debt[0] >= _FACTOR.denominator:
        eager_additive_attention(x, w, mask)
        _debt[0] -= _FACTOR.denominator
    return out


def _slowdown(index: int) -> Impl:
    factor = _FACTORS[min(index, len(_FACTORS) - 1)]
    return Impl(name=slowdown_name(index), family=ADDITIVE, fn=_slowed_by(factor),
                description=f"eager, {float(factor):g} x its wall time ({SLOWDOWN_ENV})")


SLOWDOWN, SLOWDOWN_2, SLOWDOWN_3, SLOWDOWN_4 = (_slowdown(index) for index in range(4))
#: the module attributes of the slowed implementations, in factor order (for FASTFORMER_BENCH_PLUGINS); a factor
#: of 1 makes one of them the same speed as eager through different code (another call frame, other allocations)
SLOWDOWN_ATTRIBUTES = ("SLOWDOWN", "SLOWDOWN_2", "SLOWDOWN_3", "SLOWDOWN_4")
EXTRA = Impl(name="test_extra", family=ADDITIVE, fn=_extra,
             description=f"eager, {SLOWDOWN_ENV} (default 1.25) x its work over many calls")
