"""The probe's models: identical but for the token mixer (additive or softmax attention).

Embedding + learned positions, ``layers`` pre-norm blocks (token shift, mixer, 2x MLP, each in a residual), a final
norm, and a head: mean-pooled for a label per sequence, per position otherwise. The mixer is the suite's own
``FastformerLayer`` (any columns, any registered additive implementation) or ``SoftmaxAttentionLayer``.
"""

from __future__ import annotations

import torch
from torch import nn

from fastformer_bench.impls.additive_eager import pooling_weights
from fastformer_bench.layers import FastformerLayer, SoftmaxAttentionLayer

MIXERS = ("additive", "softmax")


class Block(nn.Module):
    """Token shift, mixer, MLP: each in a residual.

    The token shift (a learned map of the previous position's features, a width-2 causal convolution) gives
    every position its left neighbour, so that recall needs one token-to-token hop: without it, softmax
    attention sat at 25 % on MQAR (N = 64, 8 pairs) after 1,500 steps, with it 100 % after 600. Zoology's
    mixers and RWKV carry such short convolutions too; both mixers here get the same one.
    """

    def __init__(self, width: int, mixer: nn.Module) -> None:
        super().__init__()
        self.norm_mix, self.mix = nn.LayerNorm(width), mixer
        self.shift = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift(nn.functional.pad(x, (0, 0, 1, 0))[:, :-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shifted(x)
        x = x + self.mix(self.norm_mix(x))
        return x + self.mlp(self.norm_mlp(x))


class ProbeModel(nn.Module):
    def __init__(self, *, mixer: str, impl: str, vocab: int, classes: int, per_position: bool, seq_len: int,
                 width: int, heads: int, layers: int, columns: int) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"unknown mixer {mixer!r}; known: {', '.join(MIXERS)}.")
        self.mixer, self.per_position = mixer, per_position
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(seq_len, width) * 0.02)

        def mixing() -> nn.Module:
            if mixer == "additive":
                return FastformerLayer(width, heads, columns=columns, impl=impl)
            return SoftmaxAttentionLayer(width, heads, impl=impl)

        self.blocks = nn.ModuleList(Block(width, mixing()) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] (a label per sequence) or [B, N, classes] (per position)."""
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x if self.per_position else x.mean(dim=1))

    @torch.no_grad()
    def pooling_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """The additive mixers' learned pooling weights a_c, head-averaged: [layers, C-1, B, N].

        They are the attention rows of a static learned query (docs/design.md §1): the same for every token of the
        sequence, so one row per column says which tokens the layer listens to.
        """
        if self.mixer != "additive":
            raise ValueError("pooling weights exist for additive mixers only.")
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        found = []
        for block in self.blocks:
            layer = block.mix
            columns = layer.columns_of(block.norm_mix(block.shifted(x)))
            found.append(pooling_weights(columns, layer.query.to(columns.dtype)).mean(dim=2))
            x = block(x)
        return torch.stack(found)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
