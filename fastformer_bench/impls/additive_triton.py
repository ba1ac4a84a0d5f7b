"""Fused Triton additive attention (docs/design.md §1): forward and backward, any C >= 2, masks, any strides of x.

The kernels are in ``additive_triton_kernels`` (read that first); this file holds the launcher, the autograd
wrapper and the registry entry. Per aggregated column the forward is one streaming pass over x_c (split over
chunks of N, each chunk an online softmax) whose chunks the next pass combines; the product x_{c+1} * g_c is formed in
registers inside the pass that reads x_{c+1}. Only the output is written, and autograd keeps only the global
vectors g_c and the softmax max / sum of exp per (b, h, c): backward recomputes the rest from x. Forward is C
kernel launches, backward C + 1.

Traffic, in elements of x's dtype: forward reads C·B·N·D and writes B·N·D; backward reads C·B·N·D + B·N·D
(x again and grad_out) and writes C·B·N·D (dx). Everything else is O(B·H·Dh·chunks).

A small problem is bound by the host, not by HBM, so the launcher keeps its own Python work per call small:
the plan and the chunk-partial workspaces are cached per problem (``_Plan``), under a key that holds everything
the input checks read of x and w (so they run once per key, and once per mask layout unless its rows are read);
autograd's Function is applied without its Python wrapper, and backward runs without once_differentiable's, where
neither has work to do; a call allocates only what it returns or saves for backward; w is read in its own dtype
and strides by the kernels; nothing reads device data on the host (so nothing waits for the GPU); and on CUDA the
kernels Triton compiled for a call's argument layout are launched directly from the second call on (``_launch``).

Triton is imported lazily: without it (or without a GPU and TRITON_INTERPRET=1) the registry still loads and
``supports`` says why this implementation cannot run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections import OrderedDict
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.checks import check_additive, check_device

#: fp32 accumulation everywhere; float64 would silently lose precision, so it is refused instead.
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: programs per streaming pass to aim for, per SM: several resident programs per SM hide memory latency.
_PROGRAMS_PER_SM = 8
#: elements per [BLOCK_N, BLOCK_D] tile and warps per program: 8 elements per thread. ptxas (sm_90) puts the
#: backward at ~112 registers and the forward at ~48 there; 16 per thread took the backward to 182-255.
_TILE_ELEMS = 2048
_NUM_WARPS = 8
#: chunk partials folded per step of a combine loop (tests lower it to run the loop several times).
_COMBINE_BLOCK = 64
#: plans (with their workspaces) kept, least recently used dropped first: a sweep visits many shapes.
_MAX_PLANS = 32
#: "jit" launches every kernel through Triton's own dispatch, for comparison or should the direct path break.
_LAUNCH_MODE_ENV = "FASTFORMER_BENCH_TRITON_LAUNCH"


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"triton is not importable ({type(exc).__name__}: {exc}); install it with `pip install triton`"
    return None


_KERNELS: ModuleType | None = None


def _kernels() -> ModuleType:
    # Imported on first launch, not with this module: triton.jit reads TRITON_INTERPRET when it decorates.
    global _KERNELS
    if _KERNELS is None:
        from fastformer_bench.impls import additive_triton_kernels

        _KERNELS = additive_triton_kernels
    return _KERNELS


# ------------------------------------------------------------------------------------------------ launcher


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    # The interpreter runs programs one after another: fewer, larger programs are faster there.
    return 1


def _plan(batch: int, heads: int, seq_len: int, head_dim: int, device: torch.device,
          block_n: int | None, chunk_n: int | None) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_D, chunk_n, n_chunks): tile sizes and how the tokens are split between programs."""
    block_d = _next_pow2(head_dim)
    if block_n is None:
        block_n = max(1, min(128, _TILE_ELEMS // block_d))
        block_n = min(block_n, max(16, _next_pow2(seq_len)))
    elif block_n < 1 or block_n & (block_n - 1):
        raise ValueError(f"block_n must be a power of two, got {block_n}.")
    if chunk_n is None:
        tiles = _cdiv(seq_len, block_n)
        # Split N only as far as needed to give every SM several programs. Each program of the next pass
        # re-reads all n_chunks partial rows of its (b, h) to combine them, n_chunks·4·BLOCK_D bytes against
        # the chunk_n·e·Dh it streams; n_chunks <= sqrt(N / 32) keeps that under ~1/16 for 2-byte inputs.
        want = _cdiv(_PROGRAMS_PER_SM * _sm_count(device), batch * heads)
        want = min(want, max(1, math.isqrt(seq_len // 32)), tiles)
        chunk_n = _cdiv(tiles, want) * block_n
    elif chunk_n < 1:
        raise ValueError(f"chunk_n must be >= 1, got {chunk_n}.")
    return block_n, block_d, chunk_n, _cdiv(seq_len, chunk_n)


class _Plan:
    """Everything a call derives from its problem alone, kept between calls: tile sizes, the split of N, the
    fp32 workspaces that never leave the launcher, and the kernels compiled for each argument layout.

    The workspaces are reused by every call with this plan, so they hold only what a call consumes before it
    returns (chunk partials; the pooled statistics of a call that keeps no autograd graph). Calls that overlap
    on different CUDA streams or threads must not share a plan.
    """

    def __init__(self, device: torch.device, C: int, B: int, N: int, H: int, Dh: int, block_n: int | None,
                 chunk_n: int | None) -> None:
        self.block_n, self.block_d, self.chunk, self.n_chunks = _plan(B, H, N, Dh, device, block_n, chunk_n)
        self.block_c = min(_COMBINE_BLOCK, _next_pow2(self.n_chunks))
        self.block_r = min(_COMBINE_BLOCK, _next_pow2(B * self.n_chunks))
        self.grid = B * H * self.n_chunks
        self.scale = 1.0 / math.sqrt(Dh)
        self.stats_shape = (C - 1, B * H, Dh + 2)
        self.out_shape = (B, N, H * Dh)
        self.batch, self.seq_len, self.heads, self.head_dim = B, N, H, Dh
        self.device = device
        self.columns = C
        self._fwd: tuple[torch.Tensor, ...] | None = None
        self._bwd: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stats: torch.Tensor | None = None
        #: launch kernels without Triton's dispatch (see _direct_launches); the variable is read per plan
        self.direct = device.type == "cuda" and os.environ.get(_LAUNCH_MODE_ENV) != "jit"
        #: per argument layout, the direct launch of each of a call's kernels, in launch order
        self.launches: dict[tuple, list] = {}
        #: the masks' layouts (shape, dtype, device) that passed check_additive beside this plan's x and w
        self.masks: set[tuple | None] = set()

    def _f32(self, *shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def fwd_workspace(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chunk partials of the forward (max, sum of exp, exp-weighted sum), two slots each."""
        if self._fwd is None:
            self._fwd = (self._f32(2, self.grid), self._f32(2, self.grid), self._f32(2, self.grid, self.block_d))
        return self._fwd

    def bwd_workspace(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk partials of the backward: dg (two slots) and every pooled column's dw."""
        if self._bwd is None:
            self._bwd = (self._f32(2, self.grid, self.block_d), self._f32(self.columns - 1, self.grid, self.block_d))
        return self._bwd

    def scratch_stats(self) -> torch.Tensor:
        """Pooled statistics for a call that keeps no graph: consumed within the call, so reused."""
        if self._stats is None:
            self._stats = self._f32(*self.stats_shape)
        return self._stats


_PLANS: OrderedDict[tuple, _Plan] = OrderedDict()


def _plan_key(x: torch.Tensor, w: torch.Tensor, block_n: int | None, chunk_n: int | None) -> tuple | None:
    """What a plan is cached under: everything ``check_additive`` (bar the mask) and ``_supports`` read of x and w,
    so a plan found under it stands for those checks having passed; None where x or w is no tensor."""
    try:
        return x.shape, w.shape, x.dtype, w.dtype, x.device, w.device, block_n, chunk_n
    except AttributeError:
        return None


def _mask_layout(mask: torch.Tensor) -> tuple | None:
    """What the mask's checks read of it bar its rows (``_Plan.masks``); None where it is no tensor."""
    try:
        return mask.shape, mask.dtype, mask.device
    except AttributeError:
        return None


def _new_plan(x: torch.Tensor, w: torch.Tensor, key: tuple | None, block_n: int | None,
              chunk_n: int | None) -> _Plan:
    """The first call of a key: the shape and device checks, then the plan, cached (least recently used first out)."""
    C, B, N, _, H, Dh = check_additive(x, w, None)
    if _supports(x.device, x.dtype) is not None:
        check_device(TRITON, x.device, x.dtype)  # raises, with the registry's sentence
    plan = _Plan(x.device, C, B, N, H, Dh, block_n, chunk_n)
    _PLANS[key] = plan
    if len(_PLANS) > _MAX_PLANS:
        _PLANS.popitem(last=False)
    return plan


@functools.cache
def _triton_runtime() -> tuple:
    from triton import knobs
    from triton.runtime import driver

    return knobs.runtime, driver.active


def _direct_ok(plan: _Plan) -> bool:
    """Whether this call's kernels may skip Triton's dispatch: on CUDA, unless FASTFORMER_BENCH_TRITON_LAUNCH is
    "jit" or a profiler (proton) hooks every launch through that dispatch."""
    if not plan.direct:
        return False
    runtime = _triton_runtime()[0]
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    return (enter is None or not getattr(enter, "calls", True)) and (leave is None or not getattr(leave, "calls", True))


def _current_stream(index: int) -> int:
    return _triton_runtime()[1].get_current_stream(index)


def _direct_launches(plan: _Plan, key: tuple) -> list:
    """The direct launches of the calls with this argument layout (filled by the first of them).

    Triton compiles a kernel per specialisation of its arguments (dtypes, 16-byte alignment of pointers,
    integers equal to 1 or divisible by 16). The key holds all of that which can change between calls of one
    plan (dtype, strides and pointer alignment of the caller's tensors), so a kernel found under it is the one
    Triton's dispatch would pick; the launcher's own allocations are always 16-byte aligned.
    """
    launches = plan.launches.get(key)
    if launches is None:
        launches = plan.launches[key] = []
    return launches


def _launch(kernel, grid: int, args: list, num_warps: int, direct: list | None, i: int, stream: int) -> None:
    """Launch number i of a call: directly when its layout has been launched before, else through Triton's
    dispatch (which compiles on a miss), keeping what it returns for the next call with this layout."""
    if direct is not None and i < len(direct) and direct[i] is not None:
        run, function, metadata = direct[i]
        # Triton's own launch, less its dispatch: grid, stream, function, metadata, launch metadata and the
        # two launch hooks (none here), then every argument of the signature, constexprs included.
        run(grid, 1, 1, stream, function, metadata, None, None, None, *args)
        return
    compiled = kernel[(grid,)](*args, num_warps=num_warps)
    if direct is not None and i == len(direct):
        direct.append(_direct_entry(compiled))


def _direct_entry(compiled) -> tuple | None:
    compiled = compiled.result() if hasattr(compiled, "result") else compiled  # an asynchronous compile's future
    try:
        return compiled.run, compiled.function, compiled.packed_metadata
    except AttributeError:  # not a CompiledKernel: keep to Triton's dispatch
        return None


def _align(t: torch.Tensor) -> int:
    return t.data_ptr() % 16


_NO_GUARD = contextlib.nullcontext()


def _device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    if device.type == "cuda" and torch.cuda.current_device() != device.index:
        return torch.cuda.device(device)
    return _NO_GUARD


def _mask_args(mask: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, int, tuple | None]:
    """The mask as the kernels read it, its strides, and its part of the launch layout key."""
    if mask is None:
        return x, 0, 0, None  # never read: HAS_MASK is False
    m = mask.view(torch.uint8)  # same bytes; Triton loads bool pointers awkwardly across versions
    sm_b, sm_n = m.stride()
    return m, sm_b, sm_n, (sm_b, sm_n, _align(m))


def _forward(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, plan: _Plan,
             keep_stats: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, N, D], and what backward needs: the pooled statistics [C-1, B*H, Dh + 2] (fp32: g_c, max, sum of
    exp); a new tensor with ``keep_stats``, else the plan's scratch copy.

    C launches: one pass per pooled column, then the output pass; pass c + 1 combines column c's chunk partials.
    """
    k = _kernels()
    pm, pl, pacc = plan._fwd or plan.fwd_workspace()
    out = torch.empty(plan.out_shape, dtype=x.dtype, device=x.device)
    stats = torch.empty(plan.stats_shape, dtype=torch.float32, device=x.device) if keep_stats else plan.scratch_stats()
    mask_t, sm_b, sm_n, mask_key = (x, 0, 0, None) if mask is None else _mask_args(mask, x)
    sx_c, sx_b, sx_n, sx_d = sx = x.stride()
    sw = w.stride()
    direct, stream = None, 0
    if _direct_ok(plan):
        direct = _direct_launches(plan, ("fwd", sx, _align(x), sw, _align(w), mask_key))
        stream = _current_stream(x.device.index)
    C, N, H, Dh = plan.columns, plan.seq_len, plan.heads, plan.head_dim
    grid, BLOCK_C, BLOCK_N, BLOCK_D = plan.grid, plan.block_c, plan.block_n, plan.block_d
    pool = [x, sx_c, sx_b, sx_n, sx_d, w, *sw, mask_t, sm_b, sm_n, pm, pl, pacc, stats,
            0, N, H, Dh, plan.chunk, plan.n_chunks, plan.scale, False, mask is not None, BLOCK_C, BLOCK_N, BLOCK_D]
    with _device_guard(x.device):
        for c in range(C - 1):
            pool[16], pool[23] = c, c > 0  # col, HAS_PREV
            _launch(k._pool_partial_kernel, grid, pool, _NUM_WARPS, direct, c, stream)
        _launch(k._output_kernel, grid,
                [x, sx_c, sx_b, sx_n, sx_d, mask_t, sm_b, sm_n, pm, pl, pacc, stats, out, *out.stride(),
                 C - 1, N, H, Dh, plan.chunk, plan.n_chunks, mask is not None, BLOCK_C, BLOCK_N, BLOCK_D],
                _NUM_WARPS, direct, C - 1, stream)
    return out, stats


def _backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None,
              stats: torch.Tensor, plan: _Plan, want_dx: bool,
              want_dw: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dx [C, B, N, D] (None unless want_dx) and dw [C-1, H, Dh] in w's dtype (None unless want_dw), walking the
    columns backwards.

    C + 1 launches (C without dw): one pass per column (last to first), each summing the dg partials the
    previous pass left and writing its own, then one sum of every column's dw partials.
    """
    k = _kernels()
    C, B, N, H, Dh = plan.columns, plan.batch, plan.seq_len, plan.heads, plan.head_dim
    pdg, pdw = plan._bwd or plan.bwd_workspace()
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if want_dx else None
    dw = torch.empty(w.shape, dtype=w.dtype, device=x.device) if want_dw else None
    mask_t, sm_b, sm_n, mask_key = (x, 0, 0, None) if mask is None else _mask_args(mask, x)
    sx, sw, sd = x.stride(), w.stride(), dout.stride()
    direct, stream = None, 0
    if _direct_ok(plan):
        direct = _direct_launches(plan, ("bwd", want_dx, want_dw, sx, _align(x), sw, _align(w), mask_key,
                                         dout.dtype, sd, _align(dout)))
        stream = _current_stream(x.device.index)
    # dx is never written when WRITE_DX is False: x stands in for it.
    args = [x, *sx, dout, *sd, x if dx is None else dx, *(sx if dx is None else dx.stride()), stats, w, *sw,
            mask_t, sm_b, sm_n, pdg, pdw, 0, B, N, H, Dh, plan.chunk, plan.n_chunks, plan.scale,
            True, True, mask is not None, want_dx, plan.block_c, plan.block_n, plan.block_d]
    with _device_guard(x.device):
        for c in range(C - 1, -1, -1):
            args[24], args[32], args[33] = c, c == C - 1, c > 0  # col, IS_LAST, HAS_PREV
            _launch(k._bwd_column_kernel, plan.grid, args, _NUM_WARPS, direct, C - 1 - c, stream)
        if dw is not None:
            # dw_c: for each (column, head), the sum over batch and chunks.
            _launch(k._sum_rows_kernel, (C - 1) * H, [pdw, dw, B * plan.n_chunks, Dh, plan.block_r, plan.block_d],
                    4, direct, C, stream)
    return dx, dw


# ---------------------------------------------------------------------------------------- autograd wrapper


class _FusedAdditiveAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, plan: _Plan) -> torch.Tensor:
        out, stats = _forward(x, w, mask, plan, keep_stats=True)
        # x is an input (kept alive by the caller anyway); stats is O(B·H·Dh): no N×D intermediate is saved.
        ctx.save_for_backward(x, w, mask, stats)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        # The usual backward runs with grad mode off, where once_differentiable's wrapper would only cost its checks;
        # under create_graph it makes a second derivative raise, as before.
        return (_gradients_once if torch.is_grad_enabled() else _gradients)(ctx, dout)


def _gradients(ctx, dout: torch.Tensor) -> tuple:
    x, w, mask, stats = ctx.saved_tensors
    needs = ctx.needs_input_grad
    return (*_backward(dout, x, w, mask, stats, ctx.plan, want_dx=needs[0], want_dw=needs[1]), None, None)


_gradients_once = once_differentiable(_gradients)


#: autograd.Function.apply less its Python wrapper, which binds default arguments (for setup_context, not defined
#: here) and unwraps dead functorch wrappers around each argument before this same call: a quarter of the glue
#: of a forward that keeps a graph. Taken only while no functorch transform is active (else the full apply).
_apply = super(torch.autograd.Function, _FusedAdditiveAttention).apply
_functorch_active = torch._C._are_functorch_transforms_active


def triton_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None, *,
                              block_n: int | None = None, chunk_n: int | None = None,
                              check_mask_rows: bool | None = None) -> torch.Tensor:
    """Additive attention (docs/design.md §1) with the fused kernels; differentiable in x and w.

    ``block_n`` (tokens per tile, a power of two) and ``chunk_n`` (tokens per program, any size >= 1) override
    the automatic split of N; tests use a small ``chunk_n`` to force several chunks through the combine step.

    ``check_mask_rows``: whether to refuse a mask row with no real token. Checking reads the mask, which on a
    GPU waits for the device, so by default only a CPU mask is checked; unchecked, such a row's output is NaN.
    """
    key = _plan_key(x, w, block_n, chunk_n)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _new_plan(x, w, key, block_n, chunk_n)
    else:
        if len(_PLANS) > 1:
            _PLANS.move_to_end(key)
    if mask is not None:
        rows = x.device.type == "cpu" if check_mask_rows is None else check_mask_rows
        layout = _mask_layout(mask)
        if rows or layout not in plan.masks:  # a mask's rows are its data: read (and checked) on every call
            check_additive(x, w, mask, mask_rows=rows)
            plan.masks.add(layout)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        if _functorch_active():
            return _FusedAdditiveAttention.apply(x, w, mask, plan)
        return _apply(x, w, mask, plan)
    # No graph to keep: the autograd wrapper and a fresh statistics buffer would be pure overhead.
    return _forward(x, w, mask, plan, keep_stats=False)[0]


# ---------------------------------------------------------------------------------------------- registry


def _supports(device: torch.device, dtype: torch.dtype) -> str | None:
    missing = _triton_import_error()
    if missing is not None:
        return missing
    if dtype not in _DTYPES:
        return f"the Triton kernel takes float32, float16 or bfloat16 (it accumulates in float32), not {dtype}"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "the Triton kernel needs a CUDA device (set TRITON_INTERPRET=1 to run it on the CPU interpreter)"
        return None
    return f"the Triton kernel runs on CUDA devices (or the CPU interpreter), not on {device.type}"


TRITON = Impl(
    name="triton",
    family=ADDITIVE,
    fn=triton_additive_attention,
    description="fused Triton kernels: split-N online-softmax pooling per column, recomputing backward",
    supports=_supports,
    compiles=True,
    opaque_to_counters=True,
)
