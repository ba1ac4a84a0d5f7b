"""The number words every report sentence is built from: ranges written once where their ends read alike."""

from fastformer_bench import axes
from fastformer_bench.report.fmt import n_range, pct, si, sig, span


def test_a_range_whose_ends_read_alike_is_written_once():
    assert span([0.6212, 0.6238], lambda s: pct(s)[:-2], " %") == "62 %"
    assert span([1.2604, 1.2641], sig, "×") == "1.26×"
    assert n_range(2048, 2048) == "2,048"


def test_a_range_keeps_its_order_and_unit():
    assert span([3.27, 0.968, 1.5], sig, "×") == "0.968–3.27×"
    assert span([0.0361, 0.0288], lambda v: si(v, "s")) == "28.8 ms–36.1 ms"
    assert n_range(16384, 131072) == "16,384–131,072"


def test_method_axes_read_as_words_and_unknown_values_keep_their_axis():
    assert axes.method_words("timing", "graph") == "CUDA-graph timing"
    assert axes.method_words("cache", "cold") == "cold L2"
    assert axes.method_words("allocator", "plain") == "plain allocator"
    assert axes.method_words("timing", "cupti") == "cupti timing"
