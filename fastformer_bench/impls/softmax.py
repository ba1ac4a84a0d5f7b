"""Vanilla multi-head softmax attention: materialised QK^T, and PyTorch's fused SDPA.

Padding: masked keys get no weight and masked query rows output zero, so both families agree on padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastformer_bench.impls import SOFTMAX, Impl
from fastformer_bench.impls.checks import check_softmax


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    B, N, D = t.shape
    return t.reshape(B, N, heads, D // heads).transpose(1, 2)  # [B, H, N, Dh]


def _merge(o: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    B, H, N, Dh = o.shape
    out = o.transpose(1, 2).reshape(B, N, H * Dh)
    if mask is not None:
        out = out * mask[..., None].to(out.dtype)
    return out


def naive_softmax_attention(q, k, v, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    B, N, D, Dh = check_softmax(q, k, v, heads, mask)
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(Dh)  # [B, H, N, N] materialised
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if q.dtype != torch.float64 else torch.float64)
    return _merge(weights.to(vh.dtype) @ vh, mask)


def sdpa_softmax_attention(q, k, v, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_softmax(q, k, v, heads, mask)
    attn_mask = None if mask is None else mask[:, None, None, :]
    o = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads), attn_mask=attn_mask)
    return _merge(o, mask)


def _naive_memory(batch: int, seq_len: int, width: int, heads: int, columns: int, dtype_bytes: int,
                  backward: bool) -> int:
    # the N x N scores and their softmax per (batch, head); backward keeps both and builds their gradients
    return (4 if backward else 2) * batch * heads * seq_len**2 * dtype_bytes


SOFTMAX_NAIVE = Impl(
    name="softmax_naive",
    family=SOFTMAX,
    fn=naive_softmax_attention,
    description="multi-head softmax attention with the N×N score matrix materialised",
    reference="softmax_naive",
    quadratic=True,
    baseline_rank=2,
    expected_exponent=(1.7, None),
    memory_model=_naive_memory,
    fallback_reference="softmax_sdpa",
)

SOFTMAX_SDPA = Impl(
    name="softmax_sdpa",
    family=SOFTMAX,
    fn=sdpa_softmax_attention,
    description="torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient kernels)",
    reference="softmax_naive",
    quadratic=True,
    baseline_rank=1,
)
