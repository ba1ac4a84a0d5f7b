"""Streaming CPU additive attention (docs/design.md §1) at the memory-bandwidth limit: no G_c ever exists in memory.

The maths: the score of column c is <G_c[n], w_c> = <x_c[n], g_{c-1} ⊙ w_c>, and g_c = g_{c-1} ⊙ Σ_n a_n x_c[n].
So each pooled column is one pass over x_c against a per-(b, h) score vector v_c = g_{c-1} ⊙ w_c / sqrt(Dh) (an
online softmax over blocks of tokens that are read from memory once and re-read from L1/L2), and the output is
one elementwise pass x_{C-1} ⊙ g_{C-2}, zeroed at padding. Forward traffic: C·B·N·D read, B·N·D written, the
minimum. Its autograd.Function saves only the inputs, the global vectors g_c, the pooled means u_c and the softmax
max / normaliser per (b, h, column), all O(B·H·Dh); backward recomputes the softmax weights from them in one pass
per column: reading x_{C-1} and grad_out (writing dx_{C-1}), then reading x_c and writing dx_c for each pooled
column, last to first. Backward traffic: (C + 1)·B·N·D read, C·B·N·D written.

The kernels are C++ with OpenMP (``additive_stream.cpp``, no torch headers), built with the system compiler
into a shared library cached under TORCH_EXTENSIONS_DIR (default ``~/.cache/torch_extensions``) and called
through ctypes with raw pointers and strides, once per direction: the column loop and the small vectors between
passes live in C++ too, since as torch ops they cost more than the passes at short N. The build takes seconds,
once per machine, source and compiler.
It happens in ``supports`` (which the API and the harness call before the first call), not per shape, so the
implementation does not count as compiling. Threads: ``torch.get_num_threads()`` at each call. Without a C++
compiler, ``supports`` says so and the implementation is unsupported.

The large buffers it allocates (forward's output, backward's dx) come from a cache of mapped memory
(``buffer_cache``: a freed one is reused by the next call of that size instead of being faulted in and zeroed
afresh) with transparent-huge-page advice (``advise_huge_pages``); ``out=`` (api.additive_attention) hands the
kernels the caller's buffer instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from fastformer_bench.impls import ADDITIVE, Impl, buffer_cache
from fastformer_bench.impls.checks import check_additive, check_device

_SOURCE = Path(__file__).with_name("additive_stream.cpp")
#: element dtype -> the kernels' suffix and accumulation dtype
_KERNELS = {
    torch.float32: ("f32", torch.float32),
    torch.float64: ("f64", torch.float64),
    torch.bfloat16: ("bf16", torch.float32),
    torch.float16: ("f16", torch.float32),
}
_BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=fast", "-fno-math-errno"]
_BUILD_TIMEOUT_S = 600


class BuildError(RuntimeError):
    """The C++ kernels could not be built or loaded; the message is one sentence."""


# --------------------------------------------------------------------------------------------------- build


def compiler() -> str | None:
    """The C++ compiler the kernels build with: $CXX where set and found, else g++, c++ or clang++ (None: none)."""
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    """Where built libraries live: TORCH_EXTENSIONS_DIR (torch's own default, ~/.cache/torch_extensions, without
    it), or a per-user temporary folder where that cannot be written (a read-only home)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "torch_extensions")
    path = Path(root) / "fastformer_bench_stream"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"fastformer_bench_stream-{os.getuid() if hasattr(os, 'getuid') else 0}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _cpu_signature() -> str:
    """The CPU's instruction-set flags: a cache shared between machines never serves a -march=native build to a
    CPU that lacks its instructions."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(cxx: str, flags: list[str], target: Path) -> str | None:
    """Build the library at ``target`` atomically; None on success, else the compiler's first error line."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *flags, str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=_BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "error" in ln.lower()]
            return (lines or (proc.stderr or proc.stdout).splitlines() or ["no output"])[0].strip()
        os.replace(tmp, target)  # atomic: concurrent builders each write their own file, the last one wins
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _flag_sets() -> list[list[str]]:
    """Most to least ambitious: native ISA and OpenMP, then without -march=native, then without OpenMP."""
    return [[*_BASE_FLAGS, "-fopenmp", "-march=native"], [*_BASE_FLAGS, "-fopenmp"], list(_BASE_FLAGS)]


def _library() -> ctypes.CDLL:
    """The loaded kernels, built first if this machine's cache does not have them; raises BuildError."""
    lib, error = _load()
    if lib is None:
        raise BuildError(error)
    return lib


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """One build attempt per process: (library, "") or (None, why not)."""
    try:
        return _build_and_load(), ""
    except BuildError as exc:
        return None, str(exc)


def _build_and_load() -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        raise BuildError("its C++ kernels need a C++ compiler (g++ or clang++, or $CXX) and none is on PATH")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"the C++ compiler {cxx} does not run ({type(exc).__name__}: {exc})") from exc
    try:
        source = _SOURCE.read_bytes()
    except OSError as exc:
        raise BuildError(f"its C++ source {_SOURCE.name} is missing from the installed package ({exc})") from exc
    try:
        cache = _cache_dir()
    except OSError as exc:
        raise BuildError(f"no writable folder for its built C++ kernels ({exc})") from exc
    errors = []
    for flags in _flag_sets():
        key = hashlib.sha256(b"\0".join([source, cxx.encode(), version.encode(), " ".join(flags).encode(),
                                         platform.machine().encode(), _cpu_signature().encode()])).hexdigest()
        target = cache / f"additive_stream_{key[:16]}.so"
        if not target.exists():
            try:
                error = _compile(cxx, flags, target)
            except (OSError, subprocess.SubprocessError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error is not None:
                errors.append(error)
                continue
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            errors.append(f"cannot load {target}: {exc}")
            continue
        _declare(lib)
        return lib
    raise BuildError(f"its C++ kernels did not build with {cxx}: {errors[0] if errors else 'unknown error'}")


def _declare(lib: ctypes.CDLL) -> None:
    P, I, T, F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for suffix, _ in _KERNELS.values():
        forward, backward = getattr(lib, f"ffs_forward_{suffix}"), getattr(lib, f"ffs_backward_{suffix}")
        forward.argtypes = [P, I, I, I, I, I, I, I, I, P, P, I, I, P, P, P, P, P, T, I]
        backward.argtypes = [P, I, I, I, P, I, I, I, I, I, I, I, P, F, P, P, P, P, P, I, I, P, P, T, I]
        forward.restype = backward.restype = None
    lib.ffs_has_openmp.argtypes, lib.ffs_has_openmp.restype = [], ctypes.c_int
    lib.ffs_fill_streaming_f32.argtypes = [P, I, ctypes.c_float, T]
    lib.ffs_fill_streaming_f32.restype = ctypes.c_int


def fill_streaming(t: torch.Tensor, value: float) -> bool:
    """Set every element of a contiguous CPU float32 tensor to ``value`` with the kernels' non-temporal stores
    (the write roof's fill, measure/env.py); whether streaming stores were used (False: plain stores, on a CPU
    without AVX or a buffer not 32-byte aligned). Raises BuildError where the kernels cannot be built."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
        raise ValueError("fill_streaming takes a contiguous CPU float32 tensor.")
    return bool(_library().ffs_fill_streaming_f32(t.data_ptr(), t.numel(), float(value), torch.get_num_threads()))


# ------------------------------------------------------------------------------------------------ launcher


#: buffers at least this large (bytes) that the kernels write get transparent-huge-page advice: a plain process's
#: allocator maps such a buffer afresh for every call, and its first touch then faults and zeroes it 4 KiB at a
#: time; with the advice the kernel faults it in 2 MiB pages (measured in a plain process, fwd B = 1, N = 65536,
#: D = 512, fp32, 1 thread: 32,769 faults and 169-202 ms a call without, 576 and 74-79 ms with; issue 32)
HUGE_PAGE_MIN_BYTES = 8 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h
_THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def _madvise():
    """libc's madvise where the kernel lets a process ask for huge pages (THP ``always`` or ``madvise``), else
    None: no advice is given and nothing fails."""
    try:
        mode = _THP_ENABLED.read_text()
    except OSError:
        return None
    if "[madvise]" not in mode and "[always]" not in mode:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask for transparent huge pages on the 2 MiB-aligned part of a fresh buffer of HUGE_PAGE_MIN_BYTES or more,
    before anything touches it; a no-op (never an error) where the kernel or the C library does not allow it.
    Returns ``t``."""
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_PAGE_MIN_BYTES:
        return t
    madvise = _madvise()
    if madvise is None:
        return t
    start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    end = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        madvise(start, end - start, _MADV_HUGEPAGE)  # a refusal (EINVAL, ENOMEM) leaves 4 KiB pages: ignored
    return t


def _output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A buffer the kernels overwrite entirely: a cached one where large (buffer_cache), with huge-page advice."""
    return advise_huge_pages(buffer_cache.empty(shape, dtype))


def _row_major(t: torch.Tensor) -> torch.Tensor:
    """t [..., D] with unit stride along D (any other strides): the kernels' layout."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _mask_args(mask: torch.Tensor | None) -> tuple[int | None, int, int]:
    if mask is None:
        return None, 0, 0
    return mask.data_ptr(), mask.stride(0), mask.stride(1)  # bool: one byte per token, 0 = padding


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel(kind: str, dtype: torch.dtype):
    return getattr(_library(), f"ffs_{kind}_{_KERNELS[dtype][0]}")


def _scaled_queries(w: torch.Tensor, acc: torch.dtype) -> tuple[torch.Tensor, float]:
    """w / sqrt(Dh) [C-1, H, Dh], contiguous in the accumulation dtype (the kernels' score vectors start from
    it), and the scale itself (backward turns d/d(w / sqrt(Dh)) into d/dw with it)."""
    scale = 1.0 / math.sqrt(w.shape[2])
    return (w.to(acc) * scale).contiguous(), scale


def _forward(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, chunk_n: int,
             out: torch.Tensor | None = None):
    """out [B, N, D] and, per pooled column c, u_c, g_c [B, H, Dh] and m_c, l_c [B, H] (accumulation dtype).

    x [C, B, N, D] with unit stride along D (``_row_major``); one call into the kernels does every column.
    ``out``: a contiguous [B, N, D] tensor of x's dtype the kernels write into (None: a fresh one)."""
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    acc = _KERNELS[x.dtype][1]
    mptr, mb, mn = _mask_args(mask)
    wa, _ = _scaled_queries(w, acc)
    u = torch.empty((C - 1, B, H, Dh), dtype=acc)
    g = torch.empty_like(u)
    m = torch.empty((C - 1, B, H), dtype=acc)
    l = torch.empty_like(m)
    if out is None:
        out = _output((B, N, D), x.dtype)
    _kernel("forward", x.dtype)(x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), C, B, N, H, Dh,
                                wa.data_ptr(), mptr, mb, mn, out.data_ptr(), u.data_ptr(), g.data_ptr(),
                                m.data_ptr(), l.data_ptr(), torch.get_num_threads(), chunk_n)
    return out, u, g, m, l


def _backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, u: torch.Tensor,
              g: torch.Tensor, m: torch.Tensor, l: torch.Tensor, chunk_n: int, want_dx: bool):
    """dx [C, B, N, D] (None unless want_dx) and dw [C-1, H, Dh] (accumulation dtype), last column first."""
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    dtype, acc = x.dtype, _KERNELS[x.dtype][1]
    mptr, mb, mn = _mask_args(mask)
    wa, scale = _scaled_queries(w, acc)
    dout = _row_major(dout.to(dtype))
    dx = _output((C, B, N, D), dtype) if want_dx else None
    dw = torch.empty((C - 1, H, Dh), dtype=acc)
    _kernel("backward", dtype)(x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), dout.data_ptr(),
                               dout.stride(0), dout.stride(1), C, B, N, H, Dh, wa.data_ptr(), scale, u.data_ptr(),
                               g.data_ptr(), m.data_ptr(), l.data_ptr(), mptr, mb, mn, _ptr(dx), dw.data_ptr(),
                               torch.get_num_threads(), chunk_n)
    return dx, dw


# ---------------------------------------------------------------------------------------- autograd wrapper


class _StreamAdditiveAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, chunk_n: int) -> torch.Tensor:
        out, u, g, m, l = _forward(_row_major(x), w, mask, chunk_n)
        # x and w are the inputs (alive anyway); u, g, m, l are O(B·H·Dh): no N×D intermediate is saved.
        ctx.save_for_backward(x, w, mask, u, g, m, l)
        ctx.chunk_n = chunk_n
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: torch.Tensor):
        x, w, mask, u, g, m, l = ctx.saved_tensors
        dx, dw = _backward(dout, _row_major(x), w, mask, u, g, m, l, ctx.chunk_n, want_dx=ctx.needs_input_grad[0])
        return dx, (dw.to(w.dtype) if ctx.needs_input_grad[1] else None), None, None


def stream_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None, *,
                              chunk_n: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Additive attention (docs/design.md §1) with the streaming CPU kernels; differentiable in x and w.

    ``chunk_n`` (tokens per reduction task, >= 1) overrides the automatic split of N between threads; tests use
    a small one to force many partial softmaxes through the combine step.
    ``out``: a [B, N, D] tensor of x's dtype the result is written into and returned (no autograd, as torch's
    out= functions; the checks are api.check_out's). A contiguous ``out`` is written by the kernels directly;
    another is filled by one copy of the result.
    """
    check_additive(x, w, mask)
    check_device(STREAM, x.device, x.dtype)
    if chunk_n is not None and chunk_n < 1:
        raise ValueError(f"chunk_n must be >= 1, got {chunk_n}.")
    if out is None:
        return _StreamAdditiveAttention.apply(x, w, mask, chunk_n or 0)
    from fastformer_bench.api import check_out  # the public API's out= rules (api imports the registry first)

    check_out(out, x, w)
    if out.is_contiguous():
        _forward(_row_major(x), w, mask, chunk_n or 0, out=out)
    else:
        out.copy_(_forward(_row_major(x), w, mask, chunk_n or 0)[0])
    return out

# ---------------------------------------------------------------------------------------------- registry


def _supports(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the streaming kernels are CPU (C++/OpenMP) code and do not run on {device.type}"
    if dtype not in _KERNELS:
        return f"the streaming kernels take float32, float64, bfloat16 or float16, not {dtype}"
    try:
        _library()  # builds once per machine (cached), so no call of the implementation ever compiles
    except BuildError as exc:
        return str(exc)
    return None


STREAM = Impl(
    name="stream",
    family=ADDITIVE,
    fn=stream_additive_attention,
    description="streaming C++/OpenMP CPU kernels: one online-softmax pass per column, recomputing backward",
    supports=_supports,
    expected_exponent=(0.8, 1.2),
    opaque_to_counters=True,
)
