"""Triton kernels for C-column additive attention (docs/design.md §1); the launcher lives in ``additive_triton``.

This module imports triton at the top and decorates kernels at import, and ``triton.jit`` reads
TRITON_INTERPRET at decoration time; so it is imported only on first launch, after the caller chose the
interpreter or a GPU, and never by the registry.

Every program owns one (batch, head) pair and one chunk of tokens ("split-N"), so one long sequence still
spreads over the whole GPU. A program walks its chunk in tiles of BLOCK_N tokens × BLOCK_D head lanes and
keeps what it reduces in float32 registers. Partial results per chunk go to small fp32 workspaces of
BLOCK_D-wide rows, and the combine step runs at the start of the pass that consumes them: every program of
the next pass folds the n_chunks rows of its (b, h) itself (from L2; the launcher keeps n_chunks small
against the chunk length), and chunk 0 stores the result. That saves a launch per column, which is most of
the time for small problems. Grids are one-dimensional (pid -> (b*H + h, chunk)) because the second and
third grid axes are limited to 65535 programs.

Every launch gets whole tensors and a column index, never views: the launcher then builds no tensor per
launch, and its fixed-size workspaces are whole cached buffers. A pass finds its column of x (and of dx and w)
through that column's stride, and its slot of the chunk-partial workspaces (two slots, column c in c % 2, so a
pass reads the previous column's partials while writing its own) through the program count. The pooled
statistics of every aggregated column live in one fp32 buffer of rows [C-1, B*H, Dh + 2]: g_c, then the softmax
max and sum of exp, kept for backward.

Offsets are int64: x may be a strided view of a buffer with more than 2^31 elements (int32 in-row offsets
were tried; ptxas reported no fewer registers). Per-tile addressing and masking are written out in each
kernel rather than in @triton.jit helpers: the interpreter re-patches triton.language on every nested jit
call, which made the CPU tests several times slower when it happened per tile (once per program is fine).
"""

from __future__ import annotations

import triton
import triton.language as tl

# ------------------------------------------------------------------------------------------ combine steps


@triton.jit
def _merge_softmax_chunks(pm_ptr, pl_ptr, pacc_ptr, pid_bh, n_chunks, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """Fold the per-chunk (max, sum of exp, exp-weighted sum) of one (b, h): returns (g, global max, sum of exp).

    Each chunk's sums are rescaled from its own max to the global one; chunks with no real token have max
    -inf and sums 0 and drop out. A mask row with no real token leaves the sum 0 and g NaN (the launcher
    refuses such masks where it can check without a device sync).
    """
    lanes = tl.arange(0, BLOCK_D)
    base = pid_bh.to(tl.int64) * n_chunks
    m_run = tl.full((), float("-inf"), tl.float32)
    l_run = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for c0 in range(0, n_chunks, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        ok = cs < n_chunks
        m = tl.load(pm_ptr + base + cs, mask=ok, other=float("-inf"))
        l = tl.load(pl_ptr + base + cs, mask=ok, other=0.0)
        a = tl.load(pacc_ptr + (base + cs)[:, None] * BLOCK_D + lanes[None, :], mask=ok[:, None], other=0.0)
        m_new = tl.maximum(m_run, tl.max(m, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_run - m_safe)
        f = tl.exp(m - m_safe)
        l_run = l_run * alpha + tl.sum(f * l, axis=0)
        acc = acc * alpha + tl.sum(f[:, None] * a, axis=0)
        m_run = m_new
    return acc / l_run, m_run, l_run


@triton.jit
def _stats_row(stats_ptr, col, pid_bh, n_bh, Dh):
    """Where column col's (g, max, sum of exp) of one (b, h) starts in the [C-1, B*H, Dh + 2] statistics buffer."""
    return stats_ptr + (col.to(tl.int64) * n_bh + pid_bh) * (Dh + 2)


@triton.jit
def _store_pooled(row_ptr, Dh, g, m, l, BLOCK_D: tl.constexpr):
    """Keep g, max and sum of exp of one (b, h) for the next pass and for backward, in its statistics row."""
    lanes = tl.arange(0, BLOCK_D)
    tl.store(row_ptr + lanes, g, mask=lanes < Dh)
    tl.store(row_ptr + Dh, m)
    tl.store(row_ptr + Dh + 1, l)


@triton.jit
def _sum_chunk_rows(src_ptr, first_row, n_rows, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Sum of n_rows consecutive BLOCK_D-wide fp32 rows starting at first_row: the backward's combine step."""
    lanes = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(0, n_rows, BLOCK_R):
        rs = r0 + tl.arange(0, BLOCK_R)
        tile = tl.load(src_ptr + (first_row + rs)[:, None] * BLOCK_D + lanes[None, :], mask=(rs < n_rows)[:, None],
                       other=0.0)
        acc += tl.sum(tile, axis=0)
    return acc


# ------------------------------------------------------------------------------------------------ forward


@triton.jit(do_not_specialize=["col"])
def _pool_partial_kernel(
    x_ptr, sx_c, sx_b, sx_n, sx_d,
    w_ptr, sw_c, sw_h, sw_d,
    mask_ptr, sm_b, sm_n,
    pm_ptr, pl_ptr, pacc_ptr, stats_ptr,
    col, N, H, Dh, chunk_n, n_chunks, scale,
    HAS_PREV: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One chunk of aggregation col: G = x_col * g_{col-1} formed in registers, online softmax over the chunk.

    With HAS_PREV it first combines column col-1's chunk partials into g_{col-1} (chunk 0 keeps it, with its
    softmax statistics). Writes the chunk's running max, sum of exp and exp-weighted sum of G to slot col % 2;
    G itself is never stored.
    """
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)  # one slot of the chunk-partial workspaces
    pid_bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    lanes = tl.arange(0, BLOCK_D)
    lane_ok = lanes < Dh
    x_row0 = x_ptr + col.to(tl.int64) * sx_c + b * sx_b + ((h * Dh + lanes).to(tl.int64) * sx_d)[None, :]
    cur = (col % 2) * n_prog
    prev = ((col + 1) % 2) * n_prog

    w = tl.load(w_ptr + col * sw_c + h * sw_h + lanes * sw_d, mask=lane_ok, other=0.0).to(tl.float32)
    if HAS_PREV:
        gprev, mprev, lprev = _merge_softmax_chunks(pm_ptr + prev, pl_ptr + prev, pacc_ptr + prev * BLOCK_D, pid_bh,
                                                    n_chunks, BLOCK_C, BLOCK_D)
        if chunk == 0:
            _store_pooled(_stats_row(stats_ptr, col - 1, pid_bh, n_prog // n_chunks, Dh), Dh, gprev, mprev, lprev,
                          BLOCK_D)

    # -inf start: a chunk can be all padding; m_safe below keeps exp() away from (-inf) - (-inf).
    m_run = tl.full((), float("-inf"), tl.float32)
    l_run = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    lo = chunk * chunk_n
    hi = tl.minimum(lo + chunk_n, N)
    for n0 in range(lo, hi, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        valid = rows < hi
        if HAS_MASK:
            valid = valid & (tl.load(mask_ptr + b * sm_b + rows.to(tl.int64) * sm_n, mask=valid, other=0) != 0)
        # Load then convert: fp32 arithmetic throughout (and the interpreter has no bf16 arithmetic).
        G = tl.load(x_row0 + rows.to(tl.int64)[:, None] * sx_n, mask=valid[:, None] & lane_ok[None, :],
                    other=0.0).to(tl.float32)
        if HAS_PREV:
            G = G * gprev[None, :]
        s = tl.where(valid, tl.sum(G * w[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_run - m_safe)
        p = tl.exp(s - m_safe)
        l_run = l_run * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * G, axis=0)
        m_run = m_new

    tl.store(pm_ptr + cur + pid, m_run)
    tl.store(pl_ptr + cur + pid, l_run)
    tl.store(pacc_ptr + (cur + pid).to(tl.int64) * BLOCK_D + lanes, acc)


@triton.jit(do_not_specialize=["col"])
def _output_kernel(
    x_ptr, sx_c, sx_b, sx_n, sx_d,
    mask_ptr, sm_b, sm_n,
    pm_ptr, pl_ptr, pacc_ptr, stats_ptr,
    out_ptr, so_b, so_n, so_d,
    col, N, H, Dh, chunk_n, n_chunks,
    HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out = x_col * g_{col-1} (col = C-1), zero on padding: the only N×D tensor the forward writes.

    g_{col-1} is combined from its chunk partials (slot (col - 1) % 2) here, like in the pooling passes.
    """
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    pid_bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    lanes = tl.arange(0, BLOCK_D)
    lane_ok = lanes < Dh
    lane_off = (h * Dh + lanes).to(tl.int64)
    x_row0 = x_ptr + col.to(tl.int64) * sx_c + b * sx_b + (lane_off * sx_d)[None, :]
    o_row0 = out_ptr + b * so_b + (lane_off * so_d)[None, :]
    prev = ((col + 1) % 2) * n_prog
    g, m_glob, l_glob = _merge_softmax_chunks(pm_ptr + prev, pl_ptr + prev, pacc_ptr + prev * BLOCK_D, pid_bh,
                                              n_chunks, BLOCK_C, BLOCK_D)
    if chunk == 0:
        _store_pooled(_stats_row(stats_ptr, col - 1, pid_bh, n_prog // n_chunks, Dh), Dh, g, m_glob, l_glob,
                      BLOCK_D)

    lo = chunk * chunk_n
    hi = tl.minimum(lo + chunk_n, N)
    for n0 in range(lo, hi, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        in_range = rows < hi
        valid = in_range
        if HAS_MASK:
            valid = valid & (tl.load(mask_ptr + b * sm_b + rows.to(tl.int64) * sm_n, mask=in_range, other=0) != 0)
        r64 = rows.to(tl.int64)[:, None]
        x = tl.load(x_row0 + r64 * sx_n, mask=valid[:, None] & lane_ok[None, :], other=0.0).to(tl.float32)
        # Padding rows are stored too (as the zeros x was loaded as), so the output needs no memset.
        tl.store(o_row0 + r64 * so_n, (x * g[None, :]).to(out_ptr.dtype.element_ty),
                 mask=in_range[:, None] & lane_ok[None, :])


# ----------------------------------------------------------------------------------------------- backward


@triton.jit(do_not_specialize=["col"])
def _bwd_column_kernel(
    x_ptr, sx_c, sx_b, sx_n, sx_d,
    dout_ptr, sd_b, sd_n, sd_d,
    dx_ptr, sdx_c, sdx_b, sdx_n, sdx_d,
    stats_ptr,
    w_ptr, sw_c, sw_h, sw_d,
    mask_ptr, sm_b, sm_n,
    pdg_ptr, pdw_ptr,
    col, B, N, H, Dh, chunk_n, n_chunks, scale,
    IS_LAST: tl.constexpr, HAS_PREV: tl.constexpr, HAS_MASK: tl.constexpr, WRITE_DX: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Backward through column col for one chunk of one (b, h), given dg_col (the gradient of its global vector).

    IS_LAST (col = C-1): dG = dout on real tokens. Otherwise dg_col is first summed from the chunk partials the
    pass over column col+1 left in slot (col + 1) % 2 of pdg, G = x_col * g_{col-1}, the softmax weights are
    recomputed from the saved max and sum of exp, and the pooling's gradient is
        ds_n = a_n (<dg, G_n> - <dg, g>),   dG_n = a_n dg + ds_n w / sqrt(Dh),   dw += ds_n G_n / sqrt(Dh).
    Then dx_col = dG * g_{col-1} is written, and dg_{col-1} = sum_n dG_n * x_col,n is reduced into slot col % 2
    (HAS_PREV, col >= 1). dg partials are rows [B, H, n_chunks] and dw_col partials rows [H, B, n_chunks] of
    column col's part of pdw, so that each sum a combine step takes (over chunks for a (b, h); over batch and
    chunks for a head) is one contiguous run.
    """
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    pid_bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    lanes = tl.arange(0, BLOCK_D)
    lane_ok = lanes < Dh
    lane_off = (h * Dh + lanes).to(tl.int64)
    col64 = col.to(tl.int64)
    x_row0 = x_ptr + col64 * sx_c + b * sx_b + (lane_off * sx_d)[None, :]
    d_row0 = dout_ptr + b * sd_b + (lane_off * sd_d)[None, :]
    dx_row0 = dx_ptr + col64 * sdx_c + b * sdx_b + (lane_off * sdx_d)[None, :]
    n_bh = n_prog // n_chunks

    if HAS_PREV:
        gprev = tl.load(_stats_row(stats_ptr, col - 1, pid_bh, n_bh, Dh) + lanes, mask=lane_ok, other=0.0)
    if not IS_LAST:
        row = _stats_row(stats_ptr, col, pid_bh, n_bh, Dh)
        w = tl.load(w_ptr + col * sw_c + h * sw_h + lanes * sw_d, mask=lane_ok, other=0.0).to(tl.float32)
        g = tl.load(row + lanes, mask=lane_ok, other=0.0)
        prev = ((col + 1) % 2) * n_prog
        dg = _sum_chunk_rows(pdg_ptr, prev + pid_bh.to(tl.int64) * n_chunks, n_chunks, BLOCK_C, BLOCK_D)
        m_glob = tl.load(row + Dh)
        inv_l = 1.0 / tl.load(row + Dh + 1)
        dg_dot_g = tl.sum(dg * g, axis=0)

    dgprev_acc = tl.zeros((BLOCK_D,), tl.float32)
    dw_acc = tl.zeros((BLOCK_D,), tl.float32)
    lo = chunk * chunk_n
    hi = tl.minimum(lo + chunk_n, N)
    for n0 in range(lo, hi, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        in_range = rows < hi
        valid = in_range
        if HAS_MASK:
            valid = valid & (tl.load(mask_ptr + b * sm_b + rows.to(tl.int64) * sm_n, mask=in_range, other=0) != 0)
        r64 = rows.to(tl.int64)[:, None]
        ld = valid[:, None] & lane_ok[None, :]
        x = tl.load(x_row0 + r64 * sx_n, mask=ld, other=0.0).to(tl.float32)
        if IS_LAST:
            dG = tl.load(d_row0 + r64 * sd_n, mask=ld, other=0.0).to(tl.float32)
        else:
            if HAS_PREV:
                G = x * gprev[None, :]
            else:
                G = x
            s = tl.sum(G * w[None, :], axis=1) * scale
            # Padding gets weight exactly 0: s is finite there (G loaded as 0), so overwrite rather than mask s.
            a = tl.where(valid, tl.exp(s - m_glob) * inv_l, 0.0)
            ds_scaled = a * (tl.sum(G * dg[None, :], axis=1) - dg_dot_g) * scale
            dG = a[:, None] * dg[None, :] + ds_scaled[:, None] * w[None, :]
            dw_acc += tl.sum(ds_scaled[:, None] * G, axis=0)
        if HAS_PREV:
            dgprev_acc += tl.sum(dG * x, axis=0)
            dx = dG * gprev[None, :]
        else:
            dx = dG
        if WRITE_DX:
            tl.store(dx_row0 + r64 * sdx_n, dx.to(dx_ptr.dtype.element_ty), mask=in_range[:, None] & lane_ok[None, :])

    if HAS_PREV:
        tl.store(pdg_ptr + ((col % 2) * n_prog + pid).to(tl.int64) * BLOCK_D + lanes, dgprev_acc)
    if not IS_LAST:
        dw_row = ((col64 * H + h) * B + b) * n_chunks + chunk
        tl.store(pdw_ptr + dw_row * BLOCK_D + lanes, dw_acc)


@triton.jit
def _sum_rows_kernel(
    src_ptr, dst_ptr, rows_per_out, Dh,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dst[i, :Dh] = sum of src rows [i * rows_per_out, (i + 1) * rows_per_out), stored in dst's dtype: dw."""
    pid = tl.program_id(0)
    lanes = tl.arange(0, BLOCK_D)
    acc = _sum_chunk_rows(src_ptr, pid.to(tl.int64) * rows_per_out, rows_per_out, BLOCK_R, BLOCK_D)
    tl.store(dst_ptr + pid.to(tl.int64) * Dh + lanes, acc.to(dst_ptr.dtype.element_ty), mask=lanes < Dh)
