"""NVML access shared by the measurement modules: a quiet session and torch's device's handle."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def session() -> Iterator:
    """Yield the pynvml module with NVML initialised, or None; never raises, never warns."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pynvml
        pynvml.nvmlInit()
    except Exception:
        yield None
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def handle(pynvml, index: int):
    """NVML's handle for torch's CUDA device ``index``.

    NVML numbers devices ignoring CUDA_VISIBLE_DEVICES: match torch's device by UUID when it can tell.
    """
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        return pynvml.nvmlDeviceGetHandleByIndex(index)


class Board:
    """One GPU's NVML readings the energy meter needs: its cumulative energy and its enforced power limit."""

    def __init__(self, pynvml, device_handle) -> None:
        self._nvml, self._handle = pynvml, device_handle

    def energy_j(self) -> float:
        """Joules the board has used since the driver loaded (raises where the counter is unsupported)."""
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3  # mJ -> J

    def power_limit_w(self) -> float | None:
        """The power limit the board enforces now (W), or None where NVML cannot say."""
        try:
            return self._nvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1e3  # mW -> W
        except Exception:
            return None


@contextmanager
def board(index: int) -> Iterator[Board | None]:
    """The NVML readings of torch's CUDA device ``index`` in a quiet session; None where NVML is unavailable."""
    with session() as pynvml:
        if pynvml is None:
            yield None
            return
        try:
            found = Board(pynvml, handle(pynvml, index))
        except Exception:
            found = None
        yield found
