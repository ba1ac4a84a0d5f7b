"""The quadratic reference: docs/design.md §1 written as a sum over pairs (i, j).

Each aggregation materialises the N×N weight matrix A[i, j] = a_j (every row the same) and multiplies it into
the tokens, in float64. It costs O(N²·D) time and O(N²) memory per (batch, head): it is the ground truth every
other implementation is checked against, not something to ship.
"""

from __future__ import annotations

import math

import torch

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.checks import check_additive


def quadratic_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    shape = check_additive(x, w, mask)
    C, B, N, D, H, Dh = shape
    out_dtype = x.dtype
    x64 = x.to(torch.float64)
    w64 = w.to(torch.float64)
    scale = 1.0 / math.sqrt(Dh)
    G = x64[0].reshape(B, N, H, Dh)
    for c in range(C - 1):
        scores = torch.einsum("bnhd,hd->bhn", G, w64[c]) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        a = torch.softmax(scores, dim=-1)  # [B, H, N]
        # The pairwise weight matrix: row i holds a_j for every j, the same for every i.
        pairwise = a[:, :, None, :].expand(B, H, N, N).contiguous()
        g_rows = pairwise @ G.permute(0, 2, 1, 3)  # [B, H, N, Dh], row i = sum_j a_j G_j
        G = x64[c + 1].reshape(B, N, H, Dh) * g_rows.permute(0, 2, 1, 3)
    out = G.reshape(B, N, D)
    if mask is not None:
        out = out * mask[..., None]
    return out.to(out_dtype)


def _pairwise_memory(batch: int, seq_len: int, width: int, heads: int, columns: int, dtype_bytes: int,
                     backward: bool) -> int:
    # a float64 N x N weight matrix per (batch, head), materialised beside its product (about two matrices at a
    # time, as measured by test_trust's memory-model test); backward keeps every aggregation's and their gradients
    pairwise = batch * heads * seq_len**2 * 8
    return pairwise * (2 * (columns - 1) if backward else 2)


REFERENCE = Impl(
    name="reference",
    family=ADDITIVE,
    fn=quadratic_additive_attention,
    description="quadratic pairwise form (materialised N×N weights), float64 inside: the ground truth",
    quadratic=True,
    fallback_reference="eager",
    expected_exponent=(1.7, None),
    compute_dtype="float64",
    memory_model=_pairwise_memory,
)
