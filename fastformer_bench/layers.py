"""The *layer* scope: the core wrapped in its projections, as a model would use it."""

from __future__ import annotations

import math

import torch
from torch import nn

from fastformer_bench import impls as registry
from fastformer_bench.api import resolve
from fastformer_bench.impls import ADDITIVE, SOFTMAX


def _check_width(width: int, heads: int) -> None:
    if not isinstance(width, int) or not isinstance(heads, int) or width < 1 or heads < 1:
        raise ValueError(f"width and heads must be positive integers, got width={width!r}, heads={heads!r}.")
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}.")


def _check_input(x: torch.Tensor, width: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != width:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"the layer input must be [B, N, {width}], got {shape}.")


class FastformerLayer(nn.Module):
    """One input projection to C columns, the additive-attention core, an output Linear, and a residual.

    ``out = Linear(core(x_0, ..., x_{C-1})) + x_0`` (the paper's r_i = Linear(u_i), output = r_i + q_i).
    With ``share_qv=True`` the last column reuses the first (x_{C-1} = x_0; for C = 3 the paper's value = query).
    """

    def __init__(self, width: int, heads: int, columns: int = 3, share_qv: bool = False,
                 impl: str = registry.DEFAULT_ADDITIVE):
        super().__init__()
        _check_width(width, heads)
        if not isinstance(columns, int) or columns < 2:
            raise ValueError(f"columns must be an integer >= 2, got {columns!r}.")
        self.width, self.heads, self.columns, self.share_qv = width, heads, columns, share_qv
        self.impl = resolve(impl, ADDITIVE).name
        projected = columns - 1 if share_qv else columns
        self.project = nn.Linear(width, projected * width)
        head_dim = width // heads
        self.query = nn.Parameter(torch.randn(columns - 1, heads, head_dim) / math.sqrt(head_dim))
        self.out = nn.Linear(width, width)

    def columns_of(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked columns [C, B, N, D]: a strided view of the projection (a copy when share_qv appends x_0)."""
        B, N, D = x.shape
        cols = self.project(x).view(B, N, -1, D).permute(2, 0, 1, 3)
        if self.share_qv:
            cols = torch.cat([cols, cols[:1]], dim=0)
        return cols

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x, self.width)
        cols = self.columns_of(x)
        core = resolve(self.impl, ADDITIVE).fn(cols, self.query.to(cols.dtype), mask)
        return self.out(core) + cols[0]


class SoftmaxAttentionLayer(nn.Module):
    """A standard multi-head attention layer: fused q/k/v projection, softmax attention, output Linear.

    No residual, as in ``torch.nn.MultiheadAttention``.
    """

    def __init__(self, width: int, heads: int, impl: str = registry.DEFAULT_SOFTMAX):
        super().__init__()
        _check_width(width, heads)
        self.width, self.heads = width, heads
        self.impl = resolve(impl, SOFTMAX).name
        self.project = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x, self.width)
        q, k, v = self.project(x).chunk(3, dim=-1)
        return self.out(resolve(self.impl, SOFTMAX).fn(q, k, v, self.heads, mask))
