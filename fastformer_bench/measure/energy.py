"""Energy per call on a GPU, from NVML's cumulative energy counter (off-GPU: nothing to measure)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fastformer_bench.measure import Meter, Shown, Subject, nvml


def energy_per_call(step: Callable[[], object], device: str, min_window_s: float = 1.0) -> float | None:
    """Joules per call from NVML's energy counter over >= min_window_s of back-to-back calls; None off-GPU."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    with nvml.session() as nv:
        if nv is None:
            return None
        try:
            handle = nvml.handle(nv, index)
            step()  # not counted: lazy initialisation
            torch.cuda.synchronize(dev)
            start_mj = nv.nvmlDeviceGetTotalEnergyConsumption(handle)
            begin, calls = time.perf_counter(), 0
            # The counter updates every few ms: a window well above that keeps its granularity negligible.
            while calls == 0 or time.perf_counter() - begin < min_window_s:
                step()
                calls += 1
                if calls % 8 == 0:
                    torch.cuda.synchronize(dev)  # keep the clock and the GPU together
            torch.cuda.synchronize(dev)
            end_mj = nv.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:
            return None  # unsupported on this board (NVML_ERROR_NOT_SUPPORTED) or NVML lost
    return (end_mj - start_mj) / 1000 / calls


def _applies(subject: Subject) -> bool:
    return subject.problem.device == "cuda" and bool(subject.settings.measure_energy)


def _measure(subject: Subject) -> dict:
    return {"energy_j": energy_per_call(subject.step, subject.problem.device)}


METER = Meter(name="energy", fields=("energy_j",), measure=_measure, applies=_applies,
              shows=(Shown("energy_j", "energy per call", "J", per_token=True),))
