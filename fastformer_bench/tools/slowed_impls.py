"""Deliberately slowed candidates for the gate's self-test, registered through FASTFORMER_BENCH_PLUGINS
(gate_selftest.PLUGINS): ``test_slowdown`` (and ``_2``, ``_3``, ``_4``) is eager slowed to a factor of its own
time, ``test_extra`` is eager doing a factor of its work.

The factors come from SLOWDOWN_ENV, read once when this module is imported (in each process of a gate).
"""

from __future__ import annotations

import os
import time
from fractions import Fraction

import torch

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.additive_eager import eager_additive_attention

#: the slowdown factors of test_slowdown and test_extra ("1.05" or "1.05,1.10,1.25"; default 1.25)
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


#: every factor SLOWDOWN_ENV names: test_slowdown is slowed by the first, test_slowdown_2 by the second and so on
#: (a name past the list takes the last), so one gate can measure several slowdowns against the same unchanged
#: points
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
        # while the gate read CPU time made the slowdown smaller whenever the VM took the CPU away mid-spin.
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
