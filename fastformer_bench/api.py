"""The functional entry points of the public API (docs/design.md §2)."""

from __future__ import annotations

import torch

from fastformer_bench import impls as registry
from fastformer_bench.impls.checks import check_device


def resolve(impl: str, family: str) -> registry.Impl:
    """The implementation called ``impl`` (short softmax names ``naive``/``sdpa`` allowed) of ``family``."""
    if not isinstance(impl, str):
        raise ValueError(f"impl must be an implementation name, got {impl!r}.")
    name = impl
    if family == registry.SOFTMAX and not impl.startswith("softmax_") and impl not in registry.names():
        name = f"softmax_{impl}"
    found = registry.get(name)
    if found.family != family:
        raise ValueError(f"implementation {impl!r} computes {found.family} attention, not {family} attention.")
    return found


def additive_attention(
    x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None, impl: str = registry.DEFAULT_ADDITIVE
) -> torch.Tensor:
    """C-column additive attention (docs/design.md §1): x [C, B, N, D], w [C-1, H, Dh], mask [B, N] -> [B, N, D]."""
    chosen = resolve(impl, registry.ADDITIVE)
    if isinstance(x, torch.Tensor):
        check_device(chosen, x.device, x.dtype)
    return chosen.fn(x, w, mask)


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
    impl: str = registry.DEFAULT_SOFTMAX,
) -> torch.Tensor:
    """Multi-head softmax attention: q, k, v [B, N, D] -> [B, N, D]; masked query rows are zero."""
    chosen = resolve(impl, registry.SOFTMAX)
    if isinstance(q, torch.Tensor):
        check_device(chosen, q.device, q.dtype)
    return chosen.fn(q, k, v, heads, mask)
