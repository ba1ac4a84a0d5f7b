"""A GPU on a CPU for the timing and energy tests: a fake measure.cuda_timing.Gpu and a fake pynvml.

Ops advance a simulated device clock and energy counter and are logged by name; a capture records the ops its
body would launch, and a replay runs them on the device without any Python call of the step.
"""

from __future__ import annotations

import types
from collections.abc import Callable


class FakeGpu:
    index = 0

    def __init__(self, call_s: float = 1e-4, flush_s: float = 4e-5, launch_s: float = 0.0, l2_bytes: int = 50 * 2**20,
                 call_w: float = 300.0, flush_w: float = 400.0, capture_error: Exception | None = None,
                 sample_factors: tuple[float, ...] = (1.0,)) -> None:
        self.call_s, self.flush_s, self.launch_s, self.l2 = call_s, flush_s, launch_s, l2_bytes
        self.call_w, self.flush_w = call_w, flush_w
        self.capture_error = capture_error
        #: each measured interval is scaled by the next of these, in turn: a GPU whose samples scatter
        self.sample_factors, self._intervals = sample_factors, 0
        self.clock = 0.0  # device seconds
        self.energy = 0.0  # joules
        self.log: list[str] = []
        self.graphs: list[list[str]] = []  # the op names each capture recorded
        self.flush_sizes: list[int] = []
        self._recording: list[tuple[str, float, float]] | None = None

    # -- ops -------------------------------------------------------------------------------------------------
    def op(self, name: str, seconds: float, watts: float) -> None:
        if self._recording is not None:
            self._recording.append((name, seconds, watts))
            return
        self.log.append(name)
        self.clock += self.launch_s + seconds  # launched from Python: the device idles (0 W) while it launches
        self.energy += seconds * watts

    def step(self) -> None:
        self.op("step", self.call_s, self.call_w)

    def wrap(self, step: Callable[[], object]) -> Callable[[], object]:
        """A real (CPU) step that also launches one fake call."""
        def wrapped():
            out = step()
            self.step()
            return out
        return wrapped

    # -- the Gpu protocol ------------------------------------------------------------------------------------
    def synchronize(self) -> None:
        self.log.append("sync")

    def l2_bytes(self) -> int | None:
        return self.l2

    def flusher(self, nbytes: int) -> Callable[[], None]:
        self.flush_sizes.append(nbytes)
        return lambda: self.op("flush", self.flush_s, self.flush_w)

    def capture(self, body: Callable[[], None]) -> Callable[[], None]:
        if self.capture_error is not None:
            raise self.capture_error
        self.log.append("capture")
        self._recording = []
        try:
            body()
            ops = self._recording
        finally:
            self._recording = None
        self.graphs.append([name for name, _, _ in ops])

        def replay() -> None:
            self.log.append("replay")
            self.clock += self.launch_s  # one launch for the whole graph
            for _, seconds, watts in ops:
                self.clock += seconds
                self.energy += seconds * watts
        return replay

    def mark(self) -> float:
        self.log.append("mark")
        return self.clock

    def seconds(self, start: float, end: float) -> float:
        self.log.append("sync")
        factor = self.sample_factors[self._intervals % len(self.sample_factors)]
        self._intervals += 1
        return (end - start) * factor


class FakeBoard:
    """nvml.Board's readings from a FakeGpu's energy counter."""

    def __init__(self, gpu: FakeGpu, limit_w: float | None = 700.0, broken: bool = False) -> None:
        self.gpu, self.limit_w, self.broken = gpu, limit_w, broken

    def energy_j(self) -> float:
        if self.broken:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.gpu.energy

    def power_limit_w(self) -> float | None:
        return self.limit_w


def fake_pynvml(gpu: FakeGpu, limit_w: float = 700.0) -> types.ModuleType:
    """A pynvml module whose device 0 reads ``gpu``'s energy counter (mJ) and enforces ``limit_w`` (mW)."""
    module = types.ModuleType("pynvml")

    def by_uuid(uuid):
        raise RuntimeError("no such UUID")

    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetHandleByUUID = by_uuid
    module.nvmlDeviceGetHandleByIndex = lambda index: ("handle", index)
    module.nvmlDeviceGetTotalEnergyConsumption = lambda handle: gpu.energy * 1e3
    module.nvmlDeviceGetEnforcedPowerLimit = lambda handle: limit_w * 1e3
    return module
