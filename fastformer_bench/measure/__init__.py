"""Meters: each measures one kind of quantity of a point and knows nothing of the others.

A :class:`Meter` names the record fields it writes and what the report should show of them (:class:`Shown`);
``fastformer_bench.point`` runs every registered meter, in order, on a point whose answer it already checked.
Adding a measured quantity is one file (its ``METER``) and one line in ``REGISTRY`` below; a meter from
outside the package is named in FASTFORMER_BENCH_METERS ("module:ATTRIBUTE,...") or registered for a block
with :func:`registered`. What the report shows travels in each record (``quantities``), so the report needs
no import of the meter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastformer_bench.plugins import Registry


@dataclass(frozen=True)
class Shown:
    """A record field the report shows: a table and a figure against N (and per token when ``per_token``)."""

    field: str
    label: str
    unit: str
    per_token: bool = False

    def spec(self) -> dict:
        return {"label": self.label, "unit": self.unit, "per_token": self.per_token}


@dataclass
class Subject:
    """What a meter measures: one point, its inputs built and its step ready to call."""

    problem: Any  # fastformer_bench.problem.Problem
    impl: Any  # fastformer_bench.impls.Impl
    inputs: Any  # fastformer_bench.problem.Inputs
    step: Callable[[], object]
    settings: Any  # fastformer_bench.point.Settings
    #: time.monotonic() value past which a meter raises TimeoutError (the point's time limit)
    deadline: float | None = None
    #: the CUDA sampler (measure/cuda_timing.py) the time meter timed with, kept open for the energy meter to
    #: repeat the same calls; whoever takes it closes it, and measure_point releases what is left
    sampler: Any = None

    def release(self) -> None:
        """Close the kept sampler, if any (its CUDA graphs hold memory)."""
        sampler, self.sampler = self.sampler, None
        if sampler is not None:
            sampler.close()


def _always(subject: Subject) -> bool:
    return True


@dataclass(frozen=True)
class Meter:
    name: str
    #: every record field this meter may write (the point refuses others: two meters never share a field)
    fields: tuple[str, ...]
    measure: Callable[[Subject], dict]
    #: what the report shows of those fields
    shows: tuple[Shown, ...] = ()
    #: False for what does not depend on running correctly (analytic work): also recorded for an incorrect point
    needs_correct: bool = True
    #: whether the meter has anything to measure for this point (settings, device)
    applies: Callable[[Subject], bool] = _always


PLUGIN_ENV = "FASTFORMER_BENCH_METERS"
# Adding a measured quantity: one file in this folder and one line here, in measuring order (timing first,
# while the process is freshest; what does not time may follow). Energy comes before memory: it repeats the time
# meter's CUDA graph, which is released before the memory meter's call.
#: meter name -> the module in this folder whose METER it is
METERS = {"work": "flops", "time": "timing", "bandwidth": "bandwidth", "energy": "energy", "memory": "memory"}
REGISTRY: Registry[Meter] = Registry("meter", Meter, PLUGIN_ENV,
                                     {name: (f"{__name__}.{module}", "METER") for name, module in METERS.items()})
names, get, registered = REGISTRY.names, REGISTRY.get, REGISTRY.registered


def active() -> list[Meter]:
    """Every registered meter, in measuring order."""
    return [get(name) for name in names()]
