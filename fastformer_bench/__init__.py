"""fastformer-bench: benchmarking and analysis of Fastformer-style additive attention.

The public API is loaded on first use (PEP 562), so that ``fastformer_bench.report`` and
``fastformer_bench.results`` can be imported on machines (and in processes) that never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["additive_attention", "softmax_attention", "registry", "FastformerLayer", "SoftmaxAttentionLayer"]
__version__ = "0.1.0"

_PUBLIC = {
    "additive_attention": ("fastformer_bench.api", "additive_attention"),
    "softmax_attention": ("fastformer_bench.api", "softmax_attention"),
    "registry": ("fastformer_bench.impls", None),
    "FastformerLayer": ("fastformer_bench.layers", "FastformerLayer"),
    "SoftmaxAttentionLayer": ("fastformer_bench.layers", "SoftmaxAttentionLayer"),
}

if TYPE_CHECKING:  # pragma: no cover
    from fastformer_bench import impls as registry  # noqa: F401
    from fastformer_bench.api import additive_attention, softmax_attention  # noqa: F401
    from fastformer_bench.layers import FastformerLayer, SoftmaxAttentionLayer  # noqa: F401


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fastformer_bench' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
