"""The functional entry points of the public API (docs/design.md §2)."""

from __future__ import annotations

import inspect

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
    x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None, impl: str = registry.DEFAULT_ADDITIVE, *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """C-column additive attention (docs/design.md §1): x [C, B, N, D], w [C-1, H, Dh], mask [B, N] -> [B, N, D].

    ``out``: a [B, N, D] tensor of x's dtype and device, not overlapping the inputs, that receives the result and
    is returned (a caller reusing one buffer spares the allocator a fresh output, and its page faults, per
    call). As with torch's own ``out=`` functions it does not support autograd: under grad mode, inputs or
    ``out`` that require grad raise RuntimeError. Implementations whose function takes ``out`` write into it
    directly (``stream``, when ``out`` is contiguous); the others compute a result and copy it in.
    """
    chosen = resolve(impl, registry.ADDITIVE)
    if isinstance(x, torch.Tensor):
        check_device(chosen, x.device, x.dtype)
    if out is None:
        return chosen.fn(x, w, mask)
    check_out(out, x, w)
    if writes_out(chosen):
        result = chosen.fn(x, w, mask, out=out)
        if result is not out:  # an implementation may decline (e.g. a strided out): its result is copied in
            out.copy_(result)
        return out
    with torch.no_grad():
        out.copy_(chosen.fn(x, w, mask))
    return out


def writes_out(chosen: registry.Impl) -> bool:
    """Whether an implementation's function takes ``out=`` and writes the result into it itself."""
    try:
        return "out" in inspect.signature(chosen.fn).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature
        return False


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first byte, one past the last byte) of the memory a tensor's elements occupy (torch strides are >= 0)."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def check_out(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """``out=``'s checks, one sentence each: a tensor of x's result shape, dtype and device that does not overlap
    the inputs (ValueError), and no autograd (RuntimeError, torch's rule for out= functions)."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor or None, got {type(out).__name__}.")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return  # the implementation's own checks say what is wrong with x
    want = tuple(x.shape[1:])
    if tuple(out.shape) != want:
        raise ValueError(f"out must have the result's shape [B, N, D] = {list(want)}, got {list(out.shape)}.")
    if out.dtype != x.dtype:
        raise ValueError(f"out must have the inputs' dtype {x.dtype}, got {out.dtype}.")
    if out.device != x.device:
        raise ValueError(f"out is on {out.device} but the inputs are on {x.device}; put them on one device.")
    o0, o1 = _span(out)
    for name, t in (("x", x), ("w", w)):
        if isinstance(t, torch.Tensor) and t.device == out.device:
            t0, t1 = _span(t)
            if o0 < t1 and t0 < o1:
                raise ValueError(f"out overlaps the memory of {name}; pass a separate buffer.")
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in (x, w, out)):
        raise RuntimeError("additive_attention(): out= does not support autograd, but an input or out requires "
                           "grad; call it under torch.no_grad() or without out=.")


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
    impl: str = registry.DEFAULT_SOFTMAX,
) -> torch.Tensor:
    """Multi-head softmax attention: q, k, v [B, N, D] -> [B, N, D]; masked query rows are zero."""
    chosen = resolve(impl, registry.SOFTMAX)
    if isinstance(q, torch.Tensor):
        check_device(chosen, q.device, q.dtype)
    return chosen.fn(q, k, v, heads, mask)
