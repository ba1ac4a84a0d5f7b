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
