"""Input checks shared by every implementation: one clear sentence per problem, raised as ValueError."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AdditiveShape(NamedTuple):
    columns: int
    batch: int
    seq_len: int
    width: int
    heads: int
    head_dim: int


def _check_mask(mask: torch.Tensor | None, batch: int, seq_len: int, ref: torch.Tensor, rows: bool = True) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise ValueError("mask must be a torch.Tensor of dtype bool or None.")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must have dtype torch.bool (True = real token), got {mask.dtype}.")
    if tuple(mask.shape) != (batch, seq_len):
        raise ValueError(f"mask must have shape [B, N] = [{batch}, {seq_len}], got {list(mask.shape)}.")
    if mask.device != ref.device:
        raise ValueError(f"mask is on {mask.device} but the inputs are on {ref.device}; put them on one device.")
    if rows and seq_len > 0 and not bool(mask.any(dim=1).all()):
        raise ValueError("every mask row needs at least one real token (True); a row is all padding.")


def check_additive(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None, *,
                   mask_rows: bool = True) -> AdditiveShape:
    """Validate x [C, B, N, D], w [C-1, H, Dh], mask [B, N] and return the sizes.

    ``mask_rows=False`` skips the one check that reads tensor data (every mask row has a real token), which on
    a GPU would wait for the device.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        raise ValueError("x and w must be torch.Tensors.")
    if x.dim() != 4:
        raise ValueError(f"x must have rank 4 [C, B, N, D], got rank {x.dim()} with shape {list(x.shape)}.")
    if w.dim() != 3:
        raise ValueError(f"w must have rank 3 [C-1, H, Dh], got rank {w.dim()} with shape {list(w.shape)}.")
    columns, batch, seq_len, width = x.shape
    if columns < 2:
        raise ValueError(f"additive attention needs at least C = 2 columns, got C = {columns}.")
    if w.shape[0] != columns - 1:
        raise ValueError(f"w must hold C-1 = {columns - 1} static queries, got {w.shape[0]}.")
    heads, head_dim = w.shape[1], w.shape[2]
    if heads < 1 or head_dim < 1:
        raise ValueError(f"w must have at least one head and head size >= 1, got H = {heads}, Dh = {head_dim}.")
    if width != heads * head_dim:
        raise ValueError(f"width D = {width} must equal heads * head size = {heads} * {head_dim}.")
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and sequence length must be >= 1, got B = {batch}, N = {seq_len}.")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but w is on {w.device}; put them on one device.")
    if x.dtype != w.dtype:
        raise ValueError(f"x has dtype {x.dtype} but w has dtype {w.dtype}; use one dtype.")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}.")
    _check_mask(mask, batch, seq_len, x, mask_rows)
    return AdditiveShape(columns, batch, seq_len, width, heads, head_dim)


def check_softmax(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None
) -> tuple[int, int, int, int]:
    """Validate q, k, v [B, N, D] and heads; return (B, N, D, Dh)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor.")
        if t.dim() != 3:
            raise ValueError(f"{name} must have rank 3 [B, N, D], got shape {list(t.shape)}.")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have one shape, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}.")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k and v are on different devices; put them on one device.")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v have different dtypes ({q.dtype}, {k.dtype}, {v.dtype}); use one dtype.")
    if not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must be floating-point tensors, got {q.dtype}.")
    batch, seq_len, width = q.shape
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive integer, got {heads!r}.")
    if width % heads:
        raise ValueError(f"width D = {width} is not divisible by heads H = {heads}.")
    if batch < 1 or seq_len < 1:
        raise ValueError(f"batch and sequence length must be >= 1, got B = {batch}, N = {seq_len}.")
    _check_mask(mask, batch, seq_len, q)
    return batch, seq_len, width, width // heads


def check_device(impl, device: torch.device, dtype: torch.dtype) -> None:
    reason = impl.unsupported_reason(device, dtype)
    if reason is not None:
        raise ValueError(f"implementation {impl.name!r} does not support {device.type}/{dtype}: {reason}")
