"""Placeholder until the fused Triton kernel lands (issue: Fused Triton kernel)."""

from __future__ import annotations

import torch

from fastformer_bench.impls import ADDITIVE, Impl


def _unsupported(device: torch.device, dtype: torch.dtype) -> str | None:
    return "the fused Triton kernel is not implemented yet"


def _not_implemented(x, w, mask=None):
    raise ValueError("implementation 'triton' is not implemented yet.")


TRITON = Impl(name="triton", family=ADDITIVE, fn=_not_implemented, description="fused Triton kernel",
              supports=_unsupported, compiles=True)
