"""fastformer-bench: benchmarking and analysis of Fastformer-style additive attention."""

from fastformer_bench import impls as registry
from fastformer_bench.api import additive_attention, softmax_attention
from fastformer_bench.layers import FastformerLayer, SoftmaxAttentionLayer

__all__ = ["additive_attention", "softmax_attention", "registry", "FastformerLayer", "SoftmaxAttentionLayer"]
__version__ = "0.1.0"
