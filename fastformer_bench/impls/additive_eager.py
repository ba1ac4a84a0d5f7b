"""Linear-time additive attention in plain PyTorch (docs/design.md §1): one softmax-pooled global vector per column.

No N×N tensor anywhere: each aggregation is a score per token, a softmax over tokens and a weighted sum.
"""

from __future__ import annotations

import math

import torch

from fastformer_bench.impls import ADDITIVE, Impl
from fastformer_bench.impls.checks import check_additive


def additive_attention_core(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The computation alone, without input checks (torch.compile traces this)."""
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    scale = 1.0 / math.sqrt(Dh)
    acc = torch.float32 if x.dtype != torch.float64 else torch.float64
    G = x[0].reshape(B, N, H, Dh)
    for c in range(C - 1):
        # A multiply and a sum over Dh, bandwidth-bound on CPU and GPU: as G @ w ([B, N, H, 1, Dh] @ [H, Dh, 1])
        # it was B·N·H matrix-vector products of size Dh, a shape cuBLAS runs far below the memory bandwidth.
        scores = (G * w[c]).sum(-1, dtype=acc).transpose(1, 2) * scale  # [B, H, N]
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        # Softmax in fp32 at least: low-precision exp/sum over thousands of tokens loses the small weights. And
        # over the last, contiguous dim: over dim 1 of [B, N, H] torch's CPU softmax sums the N terms one after
        # another, which at N = 98304 put fp32 outputs 1.8e-4 (relative) off float64; over the last dim its
        # vectorised sum stays at 1e-5.
        a = torch.softmax(scores, dim=-1)
        g = torch.einsum("bhn,bnhd->bhd", a.to(G.dtype), G)  # the global vector of column c
        G = x[c + 1].reshape(B, N, H, Dh) * g[:, None, :, :]
    out = G.reshape(B, N, D)
    if mask is not None:
        out = out * mask[..., None].to(out.dtype)
    return out


def eager_additive_attention(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_additive(x, w, mask)
    return additive_attention_core(x, w, mask)


EAGER = Impl(
    name="eager",
    family=ADDITIVE,
    fn=eager_additive_attention,
    description="linear-time plain PyTorch",
    expected_exponent=(0.8, 1.2),
)


def pooling_weights(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The softmax weights a_c of every aggregated column, [C-1, B, H, N] (float32 at least): what each column's
    static query listens to. The same recurrence as the core, kept apart so the core returns nothing extra."""
    check_additive(x, w, mask)
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    G, found = x[0].reshape(B, N, H, Dh), []
    for c in range(C - 1):
        scores = torch.einsum("bnhd,hd->bhn", G, w[c]) / math.sqrt(Dh)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        a = torch.softmax(scores, dim=-1, dtype=torch.float32 if x.dtype != torch.float64 else torch.float64)
        found.append(a)
        G = x[c + 1].reshape(B, N, H, Dh) * torch.einsum("bhn,bnhd->bhd", a.to(G.dtype), G)[:, None]
    return torch.stack(found)
