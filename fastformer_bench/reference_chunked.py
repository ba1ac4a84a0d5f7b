"""The float64 check of an additive core point in chunks over N: the same numbers as the whole check, in a
chunk's memory (docs/gpu.md §3.1).

The whole check upcasts every input to float64 and runs the reference on it, which at B = 1, N = 1,048,576,
D = 1024, C = 3, fwd_bwd holds about 140 GB: more than an H100. Here each column is pooled chunk by chunk with an
online softmax (running max, sum of exp and exp-weighted sum, all float64), then the output and every gradient
are formed chunk by chunk and compared with the point's own chunk at once: only one chunk's float64 values are
ever held, beside O(B·H·Dh) pooled vectors.

The backward goes level by level, as the recurrence's dependencies allow (docs/design.md §1): with
G_0 = x_0, g_c = Σ_n a_{c,n} G_{c,n} (a_c the softmax of G_c·w_c/√Dh over the real tokens) and
G_{c+1} = x_{c+1} ⊙ g_c, the input x_c appears in one level only (pooling c, or the output for c = C - 1). So
the output level gives dx_{C-1} and dg_{C-2}; then each pooling level c, given dg_c, gives dx_c, dw_c and
dg_{c-1}. Each pooled vector g_c = U_c / L_c with U_c = Σ_n e_n G_n and L_c = Σ_n e_n, e_n = exp(s_n - M_c) for
the column's max M_c (a constant: g does not depend on it), so a chunk's share of the gradient is autograd over
that chunk with the output gradients dU = dg / L and dL = -(dg · g) / L.
"""

from __future__ import annotations

import math

import torch

#: float64 bytes a chunk may hold at once, across its temporaries and autograd's saved tensors
CHUNK_BYTES = 2**28
#: temporaries of [B, chunk, D] float64 a backward chunk holds at most (x, G, their products and gradients)
_CHUNK_TENSORS = 8
#: the method names a record's ``reference_method`` holds
WHOLE, CHUNKED = "whole", "chunked"
#: the record's ``reference_impl`` for a point checked by this module
NAME = "chunked float64 core"
#: the share of the memory left that the whole check may plan to fill: a whole check planned within a few GB of the
#: board (the allocator's fragments, cuBLAS's workspaces) would run out of memory and be redone in chunks
WHOLE_SHARE = 0.9


def eligible(problem) -> bool:
    """Whether this module can check ``problem``: an additive implementation's core (no layer around it)."""
    return problem.family == "additive" and problem.scope == "core"


def room_bytes(device: str) -> int | None:
    """Memory the check may still take on ``device``: free device memory plus what torch's allocator holds unused
    (CUDA), the process's headroom (CPU); None where unknown."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    from fastformer_bench.measure import memory_cap

    return memory_cap.memory_headroom_bytes()


def chunk_tokens(batch: int, width: int, budget: int = CHUNK_BYTES) -> int:
    """Tokens per chunk so that a chunk's float64 temporaries stay within ``budget`` bytes."""
    return max(1, budget // (_CHUNK_TENSORS * 8 * batch * width))


class _Extremes:
    """max |got - want| and max |want| of one compared tensor, gathered chunk by chunk."""

    def __init__(self) -> None:
        self.diff = 0.0
        self.scale = 0.0

    def add(self, got: torch.Tensor, want: torch.Tensor) -> None:
        if want.numel():
            self.diff = max(self.diff, (got.double() - want).abs().max().item())
            self.scale = max(self.scale, want.abs().max().item())


def _tokens(x: torch.Tensor, c: int, n0: int, n1: int, heads: int) -> torch.Tensor:
    """Column c's tokens n0:n1 in float64, [B, n, H, Dh]."""
    part = x[c, :, n0:n1]
    return part.to(torch.float64).reshape(part.shape[0], n1 - n0, heads, -1)


def _scores(G: torch.Tensor, w_c: torch.Tensor, scale: float, mask: torch.Tensor | None, n0: int,
            n1: int) -> torch.Tensor:
    s = (G * w_c).sum(-1) * scale  # [B, n, H]
    if mask is not None:
        s = s.masked_fill(~mask[:, n0:n1, None], float("-inf"))
    return s


def _pool(x: torch.Tensor, w64: torch.Tensor, mask: torch.Tensor | None, c: int, g_prev: torch.Tensor | None,
          step: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column c's pooled vector g [B, H, Dh], max M and sum of exp L [B, H], in one online-softmax pass."""
    _, B, N, _ = x.shape
    H = w64.shape[1]
    M = torch.full((B, H), float("-inf"), dtype=torch.float64, device=x.device)
    L = torch.zeros((B, H), dtype=torch.float64, device=x.device)
    U = torch.zeros((B, H, w64.shape[2]), dtype=torch.float64, device=x.device)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        G = _tokens(x, c, n0, n1, H)
        if g_prev is not None:
            G = G * g_prev[:, None]
        s = _scores(G, w64[c], scale, mask, n0, n1)
        M_new = torch.maximum(M, s.amax(1))
        shift = torch.where(torch.isinf(M_new), torch.zeros_like(M_new), M_new)  # a chunk of padding alone
        alpha = torch.exp(M - shift)
        e = torch.exp(s - shift[:, None])
        L = L * alpha + e.sum(1)
        U = U * alpha[..., None] + torch.einsum("bnh,bnhd->bhd", e, G)
        M = M_new
    return U / L[..., None], M, L


def check_core(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, got: list[torch.Tensor],
               grad_out: torch.Tensor | None = None, step: int | None = None) -> list[tuple[float, float]]:
    """(max |got - want|, max |want|) per compared tensor: the output, and with ``grad_out`` the gradients of x
    and w, in that order (``got`` holds the point's own, in its dtype); ``want`` is the float64 reference,
    computed ``step`` tokens at a time (default: chunk_tokens)."""
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    step = step or chunk_tokens(B, D)
    scale = 1.0 / math.sqrt(Dh)
    with torch.no_grad():
        w64 = w.detach().to(torch.float64)
        pooled, g_prev = [], None
        for c in range(C - 1):
            g_prev, M, L = _pool(x.detach(), w64, mask, c, g_prev, step, scale)
            pooled.append((g_prev, M, L))
        out = _Extremes()
        for n0 in range(0, N, step):
            n1 = min(N, n0 + step)
            want = (_tokens(x, C - 1, n0, n1, H) * g_prev[:, None]).reshape(B, n1 - n0, D)
            if mask is not None:
                want = want * mask[:, n0:n1, None]
            out.add(got[0][:, n0:n1], want)
    found = [out]
    if grad_out is not None:
        found += _check_backward(x.detach(), w64, mask, got, grad_out.detach(), pooled, step, scale)
    return [(e.diff, e.scale) for e in found]


def _check_backward(x: torch.Tensor, w64: torch.Tensor, mask: torch.Tensor | None, got: list[torch.Tensor],
                    grad_out: torch.Tensor, pooled: list, step: int, scale: float) -> list[_Extremes]:
    C, B, N, D = x.shape
    H = w64.shape[1]
    got_dx, got_dw = got[1], got[2]
    dx, dw = _Extremes(), _Extremes()
    leaves = [g.clone().requires_grad_(True) for g, _, _ in pooled]  # dg_c gathers in leaves[c].grad
    # the output level: out = x_{C-1} ⊙ g_{C-2} (⊙ mask)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        xc = _tokens(x, C - 1, n0, n1, H).requires_grad_(True)
        outc = (xc * leaves[-1][:, None]).reshape(B, n1 - n0, D)
        if mask is not None:
            outc = outc * mask[:, n0:n1, None]
        outc.backward(grad_out[:, n0:n1].to(torch.float64))
        with torch.no_grad():
            dx.add(got_dx[C - 1, :, n0:n1], xc.grad.reshape(B, n1 - n0, D))
    dw_want = torch.zeros_like(w64)
    for c in range(C - 2, -1, -1):
        g, M, L = pooled[c]
        dg = leaves[c].grad
        dU, dL = dg / L[..., None], -(dg * g).sum(-1) / L
        w_c = w64[c].clone().requires_grad_(True)
        for n0 in range(0, N, step):
            n1 = min(N, n0 + step)
            xc = _tokens(x, c, n0, n1, H).requires_grad_(True)
            G = xc * leaves[c - 1][:, None] if c > 0 else xc
            e = torch.exp(_scores(G, w_c, scale, mask, n0, n1) - M[:, None])
            U, Lc = torch.einsum("bnh,bnhd->bhd", e, G), e.sum(1)
            torch.autograd.backward([U, Lc], [dU, dL])
            with torch.no_grad():
                dx.add(got_dx[c, :, n0:n1], xc.grad.reshape(B, n1 - n0, D))
        dw_want[c] = w_c.grad
    dw.add(got_dw, dw_want)
    return [dx, dw]
