"""Fused Triton additive attention (DESIGN §1): forward and backward, any C >= 2, masks, any strides of x.

The kernels are in ``additive_triton_kernels`` (read that first); this file holds the launcher, the autograd
wrapper and the registry entry. Per aggregated column the forward is one streaming pass over x_c (split over
chunks of N, each chunk an online softmax) whose chunks the next pass combines; the product x_{c+1} * g_c is formed in
registers inside the pass that reads x_{c+1}. Only the output is written, and autograd keeps only the global
vectors g_c and the softmax max / sum of exp per (b, h, c): backward recomputes the rest from x. Forward is C
kernel launches, backward C + 1.

Traffic, in elements of x's dtype: forward reads C·B·N·D and writes B·N·D; backward reads C·B·N·D + B·N·D
(x again and grad_out) and writes C·B·N·D (dx). Everything else is O(B·H·Dh·chunks).

Triton is imported lazily: without it (or without a GPU and TRITON_INTERPRET=1) the registry still loads and
``supports`` says why this implementation cannot run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
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


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"triton is not importable ({type(exc).__name__}: {exc}); install it with `pip install triton`"
    return None


def _kernels() -> ModuleType:
    # Imported on first launch, not with this module: triton.jit reads TRITON_INTERPRET when it decorates.
    from fastformer_bench.impls import additive_triton_kernels

    return additive_triton_kernels


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


def _device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _mask_args(mask: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if mask is None:
        return x, 0, 0  # never read: HAS_MASK is False
    m = mask.view(torch.uint8)  # same bytes; Triton loads bool pointers awkwardly across versions
    return m, m.stride(0), m.stride(1)


def _forward(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, block_n: int | None,
             chunk_n: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """out [B, N, D], and what backward needs: g [C-1, B*H, Dh], max and sum of exp [C-1, B*H] (fp32).

    C launches: one pass per pooled column, then the output pass. Column c's chunk partials live in slot
    c % 2 of the workspaces, so pass c+1 reads them while writing its own to the other slot.
    """
    k = _kernels()
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    BLOCK_N, BLOCK_D, chunk, n_chunks = _plan(B, H, N, Dh, x.device, block_n, chunk_n)
    BLOCK_C = min(_COMBINE_BLOCK, _next_pow2(n_chunks))
    f32 = dict(dtype=torch.float32, device=x.device)
    w32 = w.to(torch.float32).contiguous()
    mask_t, sm_b, sm_n = _mask_args(mask, x)
    scale = 1.0 / math.sqrt(Dh)

    g = torch.empty((C - 1, B * H, Dh), **f32)
    m = torch.empty((C - 1, B * H), **f32)
    l = torch.empty((C - 1, B * H), **f32)
    pm = torch.empty((2, B * H * n_chunks), **f32)
    pl = torch.empty_like(pm)
    pacc = torch.empty((2, B * H * n_chunks, BLOCK_D), **f32)
    out = torch.empty((B, N, D), dtype=x.dtype, device=x.device)
    grid = (B * H * n_chunks,)
    with _device_guard(x.device):
        for c in range(C - 1):
            xc, cur, prev = x[c], c % 2, (c + 1) % 2
            k._pool_partial_kernel[grid](
                xc, xc.stride(0), xc.stride(1), xc.stride(2),
                w32[c],
                mask_t, sm_b, sm_n,
                pm[prev], pl[prev], pacc[prev], g[c - 1], m[c - 1], l[c - 1],  # unused when c == 0
                pm[cur], pl[cur], pacc[cur],
                N, H, Dh, chunk, n_chunks, scale,
                HAS_PREV=c > 0, HAS_MASK=mask is not None, BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
                num_warps=_NUM_WARPS,
            )
        xl, last = x[C - 1], (C - 2) % 2
        k._output_kernel[grid](
            xl, xl.stride(0), xl.stride(1), xl.stride(2),
            mask_t, sm_b, sm_n,
            pm[last], pl[last], pacc[last], g[C - 2], m[C - 2], l[C - 2],
            out, out.stride(0), out.stride(1), out.stride(2),
            N, H, Dh, chunk, n_chunks,
            HAS_MASK=mask is not None, BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=_NUM_WARPS,
        )
    return out, g, m, l


def _backward(dout: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, g: torch.Tensor,
              m: torch.Tensor, l: torch.Tensor, block_n: int | None, chunk_n: int | None,
              want_dx: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """dx [C, B, N, D] (None unless want_dx) and dw [C-1, H, Dh] in w's dtype, walking the columns backwards.

    C + 1 launches: one pass per column (last to first), each summing the dg partials the previous pass left
    (slot (c+1) % 2) and writing its own (slot c % 2), then one sum of every column's dw partials.
    """
    k = _kernels()
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    BLOCK_N, BLOCK_D, chunk, n_chunks = _plan(B, H, N, Dh, x.device, block_n, chunk_n)
    BLOCK_C = min(_COMBINE_BLOCK, _next_pow2(n_chunks))
    f32 = dict(dtype=torch.float32, device=x.device)
    w32 = w.to(torch.float32).contiguous()
    mask_t, sm_b, sm_n = _mask_args(mask, x)
    scale = 1.0 / math.sqrt(Dh)

    dx = torch.empty((C, B, N, D), dtype=x.dtype, device=x.device) if want_dx else None
    dx_arg = dx if dx is not None else x  # never written when WRITE_DX is False
    pdg = torch.empty((2, B * H * n_chunks, BLOCK_D), **f32)
    pdw = torch.empty((C - 1, H * B * n_chunks, BLOCK_D), **f32)
    dw = torch.empty((C - 1, H, Dh), **f32)
    grid = (B * H * n_chunks,)
    with _device_guard(x.device):
        for c in range(C - 1, -1, -1):
            last = c == C - 1
            xc, dxc = x[c], dx_arg[c]
            pooled = C - 2 if last else c  # any valid index: the pooled-column arguments are unused when last
            k._bwd_column_kernel[grid](
                xc, xc.stride(0), xc.stride(1), xc.stride(2),
                dout, dout.stride(0), dout.stride(1), dout.stride(2),
                dxc, dxc.stride(0), dxc.stride(1), dxc.stride(2),
                g[c - 1], g[pooled], m[pooled], l[pooled], w32[pooled],  # g[c - 1] unused when c == 0
                mask_t, sm_b, sm_n,
                pdg[(c + 1) % 2], pdg[c % 2], pdw[pooled],
                B, N, H, Dh, chunk, n_chunks, scale,
                IS_LAST=last, HAS_PREV=c > 0, HAS_MASK=mask is not None, WRITE_DX=want_dx,
                BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=_NUM_WARPS,
            )
        # dw_c: for each (column, head), the sum over batch and chunks.
        k._sum_rows_kernel[((C - 1) * H,)](pdw, dw, B * n_chunks, Dh,
                                          BLOCK_R=min(_COMBINE_BLOCK, _next_pow2(B * n_chunks)), BLOCK_D=BLOCK_D)
    return dx, dw.to(w.dtype)


# ---------------------------------------------------------------------------------------- autograd wrapper


class _FusedAdditiveAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, block_n: int | None,
                chunk_n: int | None) -> torch.Tensor:
        out, g, m, l = _forward(x, w, mask, block_n, chunk_n)
        # x is an input (kept alive by the caller anyway); g, m, l are O(B·H·Dh): no N×D intermediate is saved.
        ctx.save_for_backward(x, w, mask, g, m, l)
        ctx.block_n, ctx.chunk_n = block_n, chunk_n
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: torch.Tensor):
        x, w, mask, g, m, l = ctx.saved_tensors
        dx, dw = _backward(dout, x, w, mask, g, m, l, ctx.block_n, ctx.chunk_n, want_dx=ctx.needs_input_grad[0])
        return dx, (dw if ctx.needs_input_grad[1] else None), None, None, None


def triton_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None, *,
                              block_n: int | None = None, chunk_n: int | None = None) -> torch.Tensor:
    """Additive attention (DESIGN §1) with the fused kernels; differentiable in x and w.

    ``block_n`` (tokens per tile, a power of two) and ``chunk_n`` (tokens per program, any size >= 1) override
    the automatic split of N; tests use a small ``chunk_n`` to force several chunks through the combine step.
    """
    check_additive(x, w, mask)
    check_device(TRITON, x.device, x.dtype)
    return _FusedAdditiveAttention.apply(x, w, mask, block_n, chunk_n)


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
