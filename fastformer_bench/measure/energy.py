"""Energy per call on a GPU, over the same calls as the time, from NVML's cumulative energy counter.

The time meter keeps its CUDA sampler open (measure/cuda_timing.py: the same graph or launch loop, the same k
calls, the same cache state); this meter repeats it for at least MIN_WINDOW_S of device time with the counter
read before and after, so energy and time come from the same calls. With a cold cache the flushes' energy is
taken out as their time is: a window of the flushes alone gives their power, charged for their time in the
calls' window. A result that implies more than the board's enforced power limit (NVML), over its window or
against the point's timed median, is refused with a reason, never stored: energy and time that disagree that
much did not come from the same calls. Off the GPU there is nothing to measure.
"""

from __future__ import annotations

import math
from typing import Protocol

from fastformer_bench.measure import Meter, Shown, Subject, nvml

#: device seconds of calls per window: NVML's counter updates every few ms, so its granularity stays negligible
MIN_WINDOW_S = 1.0
FIELDS = ("energy_j", "energy_reason", "energy_power_w", "energy_window_s", "power_limit_w")


class Repeatable(Protocol):
    """What the window repeats: cuda_timing.Sampler."""

    calls: int
    cold: bool
    last_run_s: float | None
    per_call_s: float | None

    def measure(self, runs: int = 1, flush_only: bool = False) -> float: ...


class Readings(Protocol):
    """What the window reads: nvml.Board."""

    def energy_j(self) -> float: ...

    def power_limit_w(self) -> float | None: ...


def _window(board: Readings, sampler: Repeatable, window_s: float, flush_only: bool) -> tuple[float, float, int]:
    """(joules, device seconds, runs) of back-to-back runs of the sampler lasting at least ``window_s``."""
    per_run = None if flush_only else sampler.last_run_s
    seconds, runs = 0.0, 0
    before = board.energy_j()
    while seconds < window_s:
        chunk = max(1, math.ceil((window_s - seconds) / per_run)) if per_run else 1
        seconds += sampler.measure(chunk, flush_only=flush_only)
        runs += chunk
        per_run = seconds / runs
    return board.energy_j() - before, seconds, runs


def _refused(found: dict, reason: str) -> dict:
    return {**found, "energy_j": None, "energy_power_w": None, "energy_reason": reason}


def energy_window(sampler: Repeatable, board: Readings, min_window_s: float = MIN_WINDOW_S) -> dict:
    """The energy meter's fields for ``sampler``'s calls, read from ``board``: joules per call, the power over the
    window, its device seconds and the board's enforced limit; energy_j None with ``energy_reason`` where the
    counter cannot be read or the result implies more than the limit."""
    found = dict.fromkeys(FIELDS)
    try:
        board.energy_j()
    except Exception as exc:
        return _refused(found, f"the board's energy counter cannot be read ({type(exc).__name__}: {exc})")
    limit = found["power_limit_w"] = board.power_limit_w()
    flush_w, flush_per_run = 0.0, 0.0
    if sampler.cold:
        flush_j, flush_s, flush_runs = _window(board, sampler, min_window_s, flush_only=True)
        flush_w, flush_per_run = flush_j / flush_s, flush_s / flush_runs
    joules, seconds, runs = _window(board, sampler, min_window_s, flush_only=False)
    found["energy_window_s"] = seconds
    flushes_s = flush_per_run * runs
    calls_j, calls_s = joules - flush_w * flushes_s, seconds - flushes_s
    if calls_j <= 0 or calls_s <= 0:
        return _refused(found, f"the calls' energy ({calls_j:.3g} J over {calls_s:.3g} s) could not be told apart "
                               "from the cache flushes' around them")
    per_call = calls_j / (runs * sampler.calls)
    power = calls_j / calls_s
    if limit is not None:
        implied = [("over its window", power)]
        if sampler.per_call_s:
            implied.append(("against the timed median", per_call / sampler.per_call_s))
        over = [(where, watts) for where, watts in implied if watts > limit]
        if over:
            where, watts = over[0]
            return _refused(found, f"{per_call:.4g} J per call implies {watts:.0f} W {where}, above the board's "
                                   f"enforced power limit of {limit:.0f} W: not stored")
    return {**found, "energy_j": per_call, "energy_power_w": power}


def _applies(subject: Subject) -> bool:
    return subject.problem.device == "cuda" and bool(subject.settings.measure_energy)


def _measure(subject: Subject) -> dict:
    sampler, subject.sampler = subject.sampler, None
    if sampler is None:
        return _refused(dict.fromkeys(FIELDS), "no CUDA-timed calls to measure over (the time meter kept none)")
    try:
        with nvml.board(sampler.device_index) as board:
            if board is None:
                return _refused(dict.fromkeys(FIELDS), "NVML is not available (nvidia-ml-py or the driver missing)")
            return energy_window(sampler, board)
    finally:
        sampler.close()


METER = Meter(name="energy", fields=FIELDS, measure=_measure, applies=_applies,
              shows=(Shown("energy_j", "energy per call", "J", per_token=True),))
