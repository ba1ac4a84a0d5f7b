"""How a CUDA point's samples are taken: k calls per sample, replayed from a CUDA graph or enqueued from Python.

Two methods (the ``timing`` axis):

- ``graph``: the k calls are captured once into a CUDA graph and every sample replays it between two CUDA events:
  device time without launch cost, as ``triton.testing.do_bench_cudagraph`` and tritonbench time kernels. A step
  that cannot be captured (a host sync, a recompilation, any capture error) raises :class:`TimingUnsupported`;
  it is never timed another way.
- ``launch``: every sample enqueues the k calls from Python back to back between two CUDA events and synchronises
  once: what a model gets calling the step from Python, launch cost included wherever the GPU waits for it.

The cache (the ``cache`` axis): ``cold`` writes a buffer of twice the L2 before every call (inside the graph too),
and each sample subtracts the device time of its k flushes alone, taken the same way just before it (as
tritonbench's cold-cache graph timer does); ``warm`` writes nothing. With ``launch``, the flush's device time
overlaps the next call's launch, so a cold launch sample hides part of the launch cost: launch cost is read warm.

k is chosen so a sample lasts at least ``target_s`` (:func:`sample_target_s`): from a first estimate, then once
more from the first sample where it came out shorter than half the target (a graph drops the launch cost the
estimate held). Everything that touches the GPU is behind :class:`Gpu`, so this logic runs on a CPU with a fake
one; :class:`TorchGpu` is the real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

GRAPH, LAUNCH = "graph", "launch"
WARM, COLD = "warm", "cold"
#: the shortest sample: CUDA events resolve about 0.5 us, and a sample's one host sync costs tens of us
MIN_SAMPLE_S = 1e-3
#: the most calls in one sample: a graph's capture and instantiation grow with its calls
MAX_CALLS = 1000
#: the flush buffer is this many L2s, so every line of the previous call's operands is evicted
FLUSH_L2_MULTIPLE = 2
#: the flush where torch does not report the L2: above the L2 of every current part (H200: 60 MB)
UNKNOWN_L2_FLUSH_BYTES = 256 * 2**20


class TimingUnsupported(RuntimeError):
    """The step cannot be timed by ``method`` (e.g. its CUDA graph capture failed): the point is ``unsupported``."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(reason)
        self.method = method


class Gpu(Protocol):
    """What sampling needs from a GPU; tests pass a fake that logs every call."""

    index: int

    def synchronize(self) -> None: ...

    def l2_bytes(self) -> int | None: ...

    def flusher(self, nbytes: int) -> Callable[[], object]:
        """A callable that writes a buffer of ``nbytes`` (allocated once, here)."""

    def capture(self, body: Callable[[], None]) -> Callable[[], None]:
        """``body`` captured into a CUDA graph; the returned callable replays it without running ``body``."""

    def mark(self) -> Any:
        """An event recorded now on the timed stream."""

    def seconds(self, start: Any, end: Any) -> float:
        """Device seconds between two marks, after waiting for ``end`` (a sample's one host sync)."""


def sample_target_s(min_time_s: float, min_samples: int) -> float:
    """How long one sample should last: the CPU path's min_time_s / min_samples, and at least MIN_SAMPLE_S."""
    return max(MIN_SAMPLE_S, min_time_s / min_samples)


def calls_for(per_call_s: float, target_s: float) -> int:
    """k: the calls per sample that make a sample last at least ``target_s`` (1 to MAX_CALLS)."""
    if not per_call_s > 0:
        return MAX_CALLS
    return max(1, min(MAX_CALLS, math.ceil(target_s / per_call_s)))


def flush_bytes(l2_bytes: int | None) -> int:
    return FLUSH_L2_MULTIPLE * l2_bytes if l2_bytes else UNKNOWN_L2_FLUSH_BYTES


def estimate_per_call(gpu: Gpu, step: Callable[[], object], calls: int = 3) -> float:
    """Device seconds per call of ``calls`` calls enqueued back to back (an upper bound on a graph's)."""
    start = gpu.mark()
    for _ in range(calls):
        step()
    end = gpu.mark()
    return gpu.seconds(start, end) / calls


def _repeat(calls: int, parts: list[Callable[[], object]]) -> Callable[[], None]:
    def body() -> None:
        for _ in range(calls):
            for part in parts:
                part()
    return body


def _root(exc: BaseException) -> BaseException:
    """The first error of a chain: a failed capture's own error hides behind the one its clean-up raised."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _captured(gpu: Gpu, body: Callable[[], None]) -> Callable[[], None]:
    try:
        return gpu.capture(body)
    except Exception as exc:
        root = _root(exc)
        if _is_oom(exc) or _is_oom(root):
            raise  # out of memory is the point's status, not a limit of the method
        first_line = (str(root).strip().splitlines() or [""])[0][:200]
        raise TimingUnsupported(GRAPH, f"cannot be timed by the graph method: its CUDA graph capture failed "
                                       f"({type(root).__name__}: {first_line})") from exc


class Sampler:
    """One point's samples: ``calls`` calls of the step (each after a flush when cold), by ``method``."""

    def __init__(self, gpu: Gpu, step: Callable[[], object], method: str, flush: Callable[[], object] | None,
                 calls: int) -> None:
        if method not in (GRAPH, LAUNCH):
            raise ValueError(f"unknown timing method {method!r}; known: {GRAPH}, {LAUNCH}.")
        self.gpu, self.method, self.calls, self.cold = gpu, method, calls, flush is not None
        self.device_index = gpu.index
        #: device seconds of the last run of the k calls (flushes included), for sizing a window of runs
        self.last_run_s: float | None = None
        #: the kept timing's median seconds per call, set by the time meter for the energy meter's check
        self.per_call_s: float | None = None
        run = _repeat(calls, [flush, step] if flush is not None else [step])
        flush_run = _repeat(calls, [flush]) if flush is not None else None
        if method == GRAPH:
            run = _captured(gpu, run)
            flush_run = _captured(gpu, flush_run) if flush_run is not None else None
        self._run, self._flush_run = run, flush_run

    def measure(self, runs: int = 1, flush_only: bool = False) -> float:
        """Device seconds of ``runs`` back-to-back runs of the k calls (or of their flushes alone), one sync."""
        run = self._flush_run if flush_only else self._run
        if run is None:
            raise RuntimeError("this sampler is closed" if self._run is None else "a warm sampler has no flushes")
        start = self.gpu.mark()
        for _ in range(runs):
            run()
        end = self.gpu.mark()
        seconds = self.gpu.seconds(start, end)
        if not flush_only:
            self.last_run_s = seconds / runs
        return seconds

    def sample(self) -> float:
        """Seconds per call of one sample, the flushes' own time taken out when cold."""
        flushes = self.measure(flush_only=True) if self.cold else 0.0
        return max(0.0, self.measure() - flushes) / self.calls

    def close(self) -> None:
        """Drop the graphs (their memory pool goes with them)."""
        self._run = self._flush_run = None


def build_sampler(gpu: Gpu, step: Callable[[], object], method: str, cache: str, target_s: float) -> Sampler:
    """A sampler whose samples last at least about ``target_s``; TimingUnsupported where ``method`` cannot time
    ``step``. The step must be warm (compiled, autotuned): a graph captures whatever it launches."""
    if cache not in (WARM, COLD):
        raise ValueError(f"unknown cache state {cache!r}; known: {WARM}, {COLD}.")
    flush = gpu.flusher(flush_bytes(gpu.l2_bytes())) if cache == COLD else None
    calls = calls_for(estimate_per_call(gpu, step), target_s)
    sampler = Sampler(gpu, step, method, flush, calls)
    first = sampler.sample()
    if first * calls < target_s / 2 and calls < MAX_CALLS:
        sampler.close()
        sampler = Sampler(gpu, step, method, flush, calls_for(first, target_s))
    return sampler


class TorchGpu:
    """The real :class:`Gpu`: torch's CUDA events, graphs and caching allocator on one device."""

    def __init__(self, device: str) -> None:
        import torch

        self._torch = torch
        dev = torch.device(device)
        self.device = dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
        self.index = self.device.index

    def _stream(self):
        return self._torch.cuda.current_stream(self.device)

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.device)

    def l2_bytes(self) -> int | None:
        return getattr(self._torch.cuda.get_device_properties(self.device), "L2_cache_size", 0) or None

    def flusher(self, nbytes: int) -> Callable[[], object]:
        return self._torch.empty(nbytes, dtype=self._torch.uint8, device=self.device).zero_

    def mark(self) -> Any:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record(self._stream())
        return event

    def seconds(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s

    def capture(self, body: Callable[[], None]) -> Callable[[], None]:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(self._stream())
        try:
            # torch's CUDA graph notes: run the body once on a side stream before capturing it (lazy workspaces,
            # autograd's stream set-up)
            with torch.cuda.stream(side):
                body()
            self._stream().wait_stream(side)
            # The graph's private pool cannot reuse blocks cached for eager calls: hand those back to the device,
            # so a point near the memory limit that runs eagerly can also be captured.
            torch.cuda.empty_cache()
            with torch.cuda.graph(graph):
                body()
        except Exception:
            self._settle()
            raise
        return graph.replay

    def _settle(self) -> None:
        # A failed capture can leave its error as CUDA's last error, which the next launch would report as its own.
        for _ in range(2):
            try:
                self._torch.zeros(1, device=self.device).add_(1)
                self.synchronize()
                return
            except Exception:
                continue
