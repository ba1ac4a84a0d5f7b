"""Vanilla multi-head softmax attention: materialised QK^T, the same in blocks of query rows, and PyTorch's SDPA.

Padding: masked keys get no weight and masked query rows output zero, so both families agree on padding.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

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


def _rows(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention of a block of query rows [B, H, rows, Dh] over every key: naive passes all N rows at once."""
    scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(qh.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if qh.dtype != torch.float64 else torch.float64)
    return weights.to(vh.dtype) @ vh


def naive_softmax_attention(q, k, v, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_softmax(q, k, v, heads, mask)
    key_mask = None if mask is None else mask[:, None, None, :]
    return _merge(_rows(_heads(q, heads), _heads(k, heads), _heads(v, heads), key_mask), mask)  # [B, H, N, N] held


#: the blocked form keeps at most this many bytes of scores and weights per block of query rows
BLOCK_BYTES = 2**28


def blocked_softmax_attention(q, k, v, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The materialised computation, BLOCK_BYTES of scores at a time: each output row depends on its own query
    row alone, so blocks of rows are exact. With gradients each block is recomputed in the backward instead of
    kept (activation checkpointing), so neither pass ever holds the N×N matrix. The float64 ground truth of the
    softmax family where naive's N×N would not fit (a large GPU point)."""
    B, N, D, Dh = check_softmax(q, k, v, heads, mask)
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    key_mask = None if mask is None else mask[:, None, None, :]
    rows = max(1, BLOCK_BYTES // (2 * B * heads * N * q.element_size()))
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    blocks = [checkpoint(_rows, qh[:, :, i:i + rows], kh, vh, key_mask, use_reentrant=False) if tracked
              else _rows(qh[:, :, i:i + rows], kh, vh, key_mask) for i in range(0, N, rows)]
    return _merge(torch.cat(blocks, dim=2), mask)


#: the SDPA kernels a CUDA call may run, in the order tried: FlashAttention first, then the memory-efficient kernel
#: and the math path only where flash cannot run (float32, a padding mask, a head size it lacks)
SDPA_CUDA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
#: the backend each kind of CUDA call runs, found by its first call: (device, dtype, head size, masked, grad) -> name
_sdpa_chosen: dict[tuple, str] = {}
_sdpa_last: str | None = None


def last_sdpa_backend() -> str | None:
    """The SDPA kernel the last CUDA call of ``softmax_sdpa`` ran ("flash_attention", "efficient_attention",
    "math"), or None where none ran since ``reset_sdpa_backend`` (a CPU call lets torch choose, as before)."""
    return _sdpa_last


def reset_sdpa_backend() -> None:
    global _sdpa_last
    _sdpa_last = None


def _sdpa_cuda(qh, kh, vh, attn_mask):
    """SDPA under ``torch.nn.attention.sdpa_kernel`` with one backend: the first of SDPA_CUDA_BACKENDS that runs this
    kind of call, found once (a kernel that cannot run raises before it launches anything) and reused, so a CUDA
    graph captures the same kernel that was checked."""
    global _sdpa_last
    from torch.nn.attention import SDPBackend, sdpa_kernel

    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (qh, kh, vh))
    key = (qh.device, qh.dtype, qh.shape[-1], attn_mask is not None, grad)
    known = _sdpa_chosen.get(key)
    for name in (known,) if known else SDPA_CUDA_BACKENDS:
        try:
            with warnings.catch_warnings():
                if known is None:  # the reasons a kernel cannot run come as warnings before its RuntimeError
                    warnings.simplefilter("ignore")
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)
        except RuntimeError:
            if known is not None or name == SDPA_CUDA_BACKENDS[-1]:
                raise
            continue
        _sdpa_chosen[key] = name
        _sdpa_last = name.lower()
        return out
    raise AssertionError("unreachable")  # pragma: no cover


def _on_cuda(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


def sdpa_softmax_attention(q, k, v, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_softmax(q, k, v, heads, mask)
    attn_mask = None if mask is None else mask[:, None, None, :]
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    if _on_cuda(q):
        o = _sdpa_cuda(qh, kh, vh, attn_mask)
    else:
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)
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
    # an independent ground truth at any size: SDPA's float64 (math) path materialises N×N as naive does
    fallback_reference="softmax_blocked",
)

SOFTMAX_SDPA = Impl(
    name="softmax_sdpa",
    family=SOFTMAX,
    fn=sdpa_softmax_attention,
    description="torch.nn.functional.scaled_dot_product_attention (on CUDA FlashAttention, else memory-efficient; "
                "the kernel in the record's sdpa_backend)",
    reference="softmax_naive",
    quadratic=True,
    baseline_rank=1,
)

SOFTMAX_BLOCKED = Impl(
    name="softmax_blocked",
    family=SOFTMAX,
    fn=blocked_softmax_attention,
    description="the materialised softmax in blocks of query rows, recomputed in backward: the large-N reference",
    reference="softmax_naive",
    quadratic=True,
    expected_exponent=(1.7, None),
)
