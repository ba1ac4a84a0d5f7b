"""The machine a run happened on (versions, CPU, GPU via NVML, threads, allocator settings, git state), for
run.json, plus the run-level machine measurements the report's roofline needs: the copy bandwidth and the GEMM
FLOP/s, per device and thread count (``machine_roofs``).

Everything degrades quietly: no GPU, no pynvml, NVML failing or no git gives None fields, never a warning.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import torch

from fastformer_bench.measure import contention, nvml
from fastformer_bench.measure.threads import threads_set

_ENV_PREFIXES = ("PYTORCH_", "MALLOC_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_", "TORCHINDUCTOR_",
                 "TRITON_", "LD_PRELOAD", "NVIDIA_TF32")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _try(fn: Callable[[], object]):
    try:
        value = fn()
    except Exception:
        return None
    return value.decode() if isinstance(value, bytes) else value


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_signature(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's vendor, family, model and stepping ("AuthenticAMD family 25 model 1 stepping 1"), None where
    unreadable: a hypervisor may name every generation "AMD EPYC", and this VM has been both a 512 KiB-L2 and a
    1 MiB-L2 part under that name, twice as fast at the same code."""
    wanted = {"vendor_id": None, "cpu family": None, "model": None, "stepping": None}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, colon, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                if colon and key.strip() in wanted:
                    wanted[key.strip()] = value.strip()
    except OSError:
        return None
    if wanted["cpu family"] is None or wanted["model"] is None:
        return None
    return (f"{wanted['vendor_id'] or 'unknown vendor'} family {wanted['cpu family']} model {wanted['model']}"
            + (f" stepping {wanted['stepping']}" if wanted["stepping"] is not None else ""))


def _size_bytes(text: str) -> int:
    """sysfs cache sizes: "32K", "512K", "32768K", "8M" (binary units)."""
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def cpu_caches() -> dict[str, int]:
    """CPU 0's data and unified caches by level ("L1d", "L2", "L3"), in bytes, from sysfs; {} where unreadable.

    The last-level cache is what a study must exceed (several times over) for its largest points to measure
    memory, not cache, bandwidth.
    """
    found: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = _size_bytes((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            found[f"L{level}" + ("d" if kind == "Data" else "")] = size
    return found


def _parallel_summary() -> dict:
    """torch.__config__.parallel_info() as key -> value, the library banner lines under "libraries"."""
    summary: dict = {"libraries": []}
    try:
        text = torch.__config__.parallel_info()
    except Exception:
        return summary
    for line in (raw.strip() for raw in text.splitlines()):
        key, colon, value = line.rpartition(":")  # "at::get_num_threads() : 2"
        if colon and value.strip():
            summary[key.strip()] = value.strip()
        elif line and not colon:
            summary["libraries"].append(line)
    return summary


def _git_state() -> dict:
    root = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _gpu(index: int = 0) -> dict:
    fields = dict.fromkeys(("gpu_name", "gpu_driver", "gpu_memory_bytes", "gpu_sm_clock_mhz", "gpu_mem_clock_mhz",
                            "gpu_max_sm_clock_mhz", "gpu_max_mem_clock_mhz", "gpu_power_limit_w", "gpu_l2_bytes"))
    cuda_ok = _try(torch.cuda.is_available) is True
    if cuda_ok:
        props = _try(lambda: torch.cuda.get_device_properties(index))
        if props is not None:
            fields.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory,
                          gpu_l2_bytes=getattr(props, "L2_cache_size", None))
    with nvml.session() as nv:
        if nv is None:
            return fields
        handle = _try(lambda: nvml.handle(nv, index))
        if handle is None:
            return fields
        limit_mw = _try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))
        fields.update(
            gpu_name=_try(lambda: nv.nvmlDeviceGetName(handle)) or fields["gpu_name"],
            gpu_driver=_try(nv.nvmlSystemGetDriverVersion),
            gpu_memory_bytes=_try(lambda: nv.nvmlDeviceGetMemoryInfo(handle).total) or fields["gpu_memory_bytes"],
            gpu_sm_clock_mhz=_try(lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM)),
            gpu_mem_clock_mhz=_try(lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_MEM)),
            gpu_max_sm_clock_mhz=_try(lambda: nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_SM)),
            gpu_max_mem_clock_mhz=_try(lambda: nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_MEM)),
            gpu_power_limit_w=None if limit_mw is None else limit_mw / 1000,
        )
    return fields


def collect_env(threads: int | None = None, argv: list[str] | None = None) -> dict:
    """A JSON-serialisable description of this machine and process (GPU fields None without a GPU)."""
    cuda_ok = _try(torch.cuda.is_available) is True
    caches = cpu_caches()
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "fvcore": _version("fvcore"),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpu_caches_bytes": caches,
        "last_level_cache_bytes": max(caches.values(), default=None),
        "logical_cores": os.cpu_count(),
        "threads_requested": threads,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "parallel_info": _parallel_summary(),
        "cuda_available": cuda_ok,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _try(torch.backends.cudnn.version) if cuda_ok else None,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        "argv": list(sys.argv if argv is None else argv),
        "kernel_memory": kernel_memory(),
    }
    env.update(contention.cpu_contention())
    env.update(_gpu())
    env.update(_git_state())
    return env


def kernel_memory(root: str | os.PathLike = "/") -> dict:
    """What the kernel does to a process's memory behind the allocator: the transparent-huge-page modes, the swap
    size, and every DAMON worker with its monitored space and scheme actions (a running paddr ``pageout`` scheme
    reclaims idle pages, so memory a kept heap holds between calls can fault in again). Unreadable: left out."""
    base = Path(root)

    def read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    facts: dict = {}
    for name in ("enabled", "defrag"):
        value = read(base / "sys/kernel/mm/transparent_hugepage" / name)
        if value:  # the mode in brackets: "always [madvise] never"
            facts[f"thp_{name}"] = value.partition("[")[2].partition("]")[0] or value
    meminfo = read(base / "proc/meminfo") or ""
    swap = [line.split()[1] for line in meminfo.splitlines() if line.startswith("SwapTotal:")]
    if swap:
        facts["swap_bytes"] = int(swap[0]) * 1024
    kdamonds = base / "sys/kernel/mm/damon/admin/kdamonds"
    workers = []
    for worker in sorted(kdamonds.glob("[0-9]*"), key=lambda p: int(p.name)) if kdamonds.is_dir() else []:
        for context in sorted(worker.glob("contexts/[0-9]*")):
            actions = [read(a) for a in sorted(context.glob("schemes/[0-9]*/action"))]
            workers.append({"state": read(worker / "state"), "operations": read(context / "operations"),
                            "actions": [a for a in actions if a]})
    if kdamonds.is_dir():
        facts["damon"] = workers
    return facts


def copy_bandwidths(devices: Iterable[str]) -> dict[str, float | None]:
    """The copy bandwidth of each device (None for one this machine lacks: its points are recorded unsupported)."""
    return {device: _measured(copy_bandwidth, device) for device in sorted(set(devices))}


def copy_bandwidth(device: str, nbytes: int = 256 * 2**20, threads: int | None = None) -> float:
    """Bytes/s of ``dst.copy_(src)`` on ``device``, counting the read and the write (2·nbytes per copy); median.
    ``threads``: torch's thread count while it copies (None: the count in force).

    The tensors are float32, the elements the studies stream: on the 2-core reference VM torch copied uint8
    tensors of the same bytes 20-30 % slower (19.0 against 22.8-24.8 GB/s, one thread), a roof too low by that
    much, which made memory-bound implementations look closer to it than they were."""
    with threads_set(threads):
        return _copy_bandwidth(device, nbytes)


def _copy_bandwidth(device: str, nbytes: int) -> float:
    dev = torch.device(device)
    src = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults / lazy init are not bandwidth
    return _median_rate(dev, lambda: dst.copy_(src), 2 * src.numel() * src.element_size(), repeats=7)


#: the read and write roofs' buffer: this many times the last-level cache, and at least the copy's 256 MiB
TRAFFIC_CACHE_MULTIPLE = 4
TRAFFIC_MIN_BYTES = 256 * 2**20


def _traffic_bytes(nbytes: int | None) -> int:
    if nbytes is not None:
        return nbytes
    return max(TRAFFIC_MIN_BYTES, TRAFFIC_CACHE_MULTIPLE * max(cpu_caches().values(), default=0))


def read_bandwidth(device: str, nbytes: int | None = None, threads: int | None = None) -> float:
    """Bytes/s read by a reduction (``src.sum()``) over a float32 buffer past the last-level cache (max(4 x the
    LLC, 256 MiB) unless ``nbytes``); median of 7 after one untimed pass. Only reads reach memory: the sum is a
    scalar. The roof of an implementation that mostly reads (a reduction over the columns)."""
    with threads_set(threads):
        dev = torch.device(device)
        src = torch.ones(max(1, _traffic_bytes(nbytes) // 4), dtype=torch.float32, device=dev)
        src.sum()  # first touch and lazy initialisation are not bandwidth
        return _median_rate(dev, src.sum, src.numel() * src.element_size(), repeats=7)


#: how the write roof writes: with the stream kernels' non-temporal stores on a CPU where they build and the CPU
#: has them (what the kernels' large outputs use: no read for ownership), else torch's fill_, whose plain stores
#: also read each destination line past the cache, which the count leaves out (and no non-temporal fill is
#: reachable from torch on a GPU)
NON_TEMPORAL, PLAIN_STORES = "non-temporal", "plain"


def _streaming_fill(dev: torch.device) -> Callable[[torch.Tensor, float], bool] | None:
    """The stream kernels' non-temporal fill where ``dev`` is a CPU whose kernels build with streaming stores."""
    if dev.type != "cpu":
        return None
    try:
        from fastformer_bench.impls import additive_stream

        return additive_stream.fill_streaming if additive_stream.fill_streaming(torch.empty(64), 0.0) else None
    except Exception:  # no compiler, no AVX: the plain fill stands, and write_method says so
        return None


def write_method(device: str) -> str:
    """How write_bandwidth writes on ``device``: NON_TEMPORAL or PLAIN_STORES."""
    return NON_TEMPORAL if _streaming_fill(torch.device(device)) else PLAIN_STORES


def write_bandwidth(device: str, nbytes: int | None = None, threads: int | None = None) -> float:
    """Bytes/s written over a float32 buffer past the last-level cache (as read_bandwidth), by write_method's
    stores; only the bytes written are counted (plain stores' read for ownership is not)."""
    with threads_set(threads):
        dev = torch.device(device)
        dst = torch.empty(max(1, _traffic_bytes(nbytes) // 4), dtype=torch.float32, device=dev)
        dst.fill_(1.0)  # first touch: page faults are not bandwidth
        streaming = _streaming_fill(dev)
        fill = (lambda: streaming(dst, 2.0)) if streaming else (lambda: dst.fill_(2.0))
        return _median_rate(dev, fill, dst.numel() * dst.element_size(), repeats=7)


#: memory traffic of a plain copy per byte copied: the source read, the destination read for ownership (a plain
#: store to a line not in cache reads it first), the destination written. torch's CPU copy_ is a vectorised
#: loop of plain stores, not a non-temporal memcpy.
COPY_TRAFFIC_PER_BYTE = 3
#: what copy_bytes_per_s counts per byte copied (the read and the write), kept as it was for the old readers
COPY_COUNTED_PER_BYTE = 2


def traffic_roofs(device: str, threads: int | None, copy: float | None) -> dict:
    """A roof's read, write and real-traffic copy fields (None where unmeasurable): ``read_bytes_per_s``,
    ``write_bytes_per_s`` with ``write_method``, and ``copy_traffic_bytes_per_s``, the same copy as ``copy``
    (copy_bytes_per_s, 2 bytes per byte copied) counted at its real traffic, 3 bytes per byte copied on a CPU.
    A GPU's copy has no read-for-ownership: its traffic is the 2 bytes copy_bytes_per_s counts."""
    per_byte = COPY_TRAFFIC_PER_BYTE if device == "cpu" else COPY_COUNTED_PER_BYTE
    return {"read_bytes_per_s": _measured(read_bandwidth, device, threads=threads),
            "write_bytes_per_s": _measured(write_bandwidth, device, threads=threads),
            "write_method": write_method(device),
            "copy_traffic_bytes_per_s": None if copy is None else copy * per_byte / COPY_COUNTED_PER_BYTE}


def _median_rate(dev: torch.device, call: Callable[[], object], work: float, repeats: int) -> float:
    """The median of ``work`` / seconds over ``repeats`` calls: timed by CUDA events on a GPU (the kernels, not
    their launch), by the wall clock on a CPU."""
    rates = []
    for _ in range(repeats):
        if dev.type == "cuda":
            with torch.cuda.device(dev):  # events record on the current device's stream
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            call()
            seconds = time.perf_counter() - t0
        rates.append(work / seconds)
    rates.sort()
    return float(rates[len(rates) // 2])


#: the GEMM roof's matrix size: big enough to run near peak, small enough for about a second per measurement
GEMM_N = {"cpu": 2048, "cuda": 8192}


def gemm_flops(device: str, threads: int | None = None, n: int | None = None, repeats: int = 3,
               dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square ``torch.mm`` (n x n, 2·n³ FLOPs: the suite's 2 per multiply-add) in ``dtype`` on
    ``device`` at ``threads`` (None: the count in force); the median of ``repeats`` after one warm-up."""
    dev = torch.device(device)
    n = n or GEMM_N.get(dev.type, 2048)
    with threads_set(threads):
        # drawn where they are used: 8192² values drawn on a CPU would take longer than the GPU's measurement
        gen = torch.Generator(device=dev).manual_seed(0)
        a, b = (torch.randn(n, n, generator=gen, device=dev).to(dtype) for _ in range(2))
        out = torch.mm(a, b)  # warm-up: page faults, BLAS start-up, CUDA handles are not FLOP/s
        return _median_rate(dev, lambda: torch.mm(a, b, out=out), 2 * n**3, repeats)


def _measured(fn: Callable[..., float], *args, **kwargs) -> float | None:
    try:
        return fn(*args, **kwargs)
    except Exception:  # no such device here: its points are recorded unsupported
        return None


#: GEMM dtypes measured beside float32 on a GPU, where bf16/fp16 products run on tensor cores at many times the
#: float32 rate (so a bf16 point set against a float32 roof would read as several times the roof). Not on a CPU:
#: its studies are float32, and a low-precision GEMM there takes seconds per measurement.
GPU_GEMM_DTYPES = ("bfloat16", "float16")


def roofs(pairs: Iterable[tuple[str, int]], dtypes: dict[str, Iterable[str]] | None = None) -> list[dict]:
    """The machine's roofs per (device, threads): copy bandwidth (bytes/s), the read, write and real-traffic
    copy roofs (traffic_roofs) and float32 GEMM FLOP/s (``gemm_dtype``), None for a device this machine lacks.
    On a GPU, ``gemm_flops_per_s_by_dtype`` adds the GEMM rate in each of ``dtypes[device]`` that is in
    GPU_GEMM_DTYPES. One entry per distinct pair, sorted."""
    found = []
    for device, threads in sorted(set(pairs)):
        roof = {"device": device, "threads": threads,
                "copy_bytes_per_s": _measured(copy_bandwidth, device, threads=threads),
                "gemm_flops_per_s": _measured(gemm_flops, device, threads=threads), "gemm_dtype": "float32"}
        roof.update(traffic_roofs(device, threads, roof["copy_bytes_per_s"]))
        extra = sorted(set((dtypes or {}).get(device, ())) & set(GPU_GEMM_DTYPES))
        if device.startswith("cuda") and extra and roof["gemm_flops_per_s"] is not None:
            roof["gemm_flops_per_s_by_dtype"] = {"float32": roof["gemm_flops_per_s"], **{
                name: _measured(gemm_flops, device, threads=threads, dtype=getattr(torch, name)) for name in extra}}
        found.append(roof)
    return found


def machine_roofs(problems: Iterable, threads: int) -> dict:
    """run.json's machine measurements for ``problems`` (anything with ``device`` and ``threads``; ``dtype``
    where it has one) in a process at ``threads``: ``roofs`` for each (device, threads) they use, a point without
    its own threads running at ``threads``, and ``copy_bytes_per_s`` {device: bytes/s} at ``threads`` as before
    the roofs existed (the gate's and the history's reader); a roof at ``threads`` gives its copy bandwidth
    instead of a second copy."""
    problems = list(problems)
    dtypes: dict[str, set[str]] = {}
    for p in problems:  # a probe point has no dtype axis
        dtypes.setdefault(p.device, set()).add(getattr(p, "dtype", "float32"))
    found = roofs(((p.device, p.threads or threads) for p in problems), dtypes)
    copy = {r["device"]: r["copy_bytes_per_s"] for r in found if r["threads"] == threads}
    # a device whose points all name other thread counts: measured at the setting as before
    copy.update(copy_bandwidths(p.device for p in problems if p.device not in copy))
    return {"copy_bytes_per_s": dict(sorted(copy.items())), "roofs": found}
