"""measure.flops: analytic counts against hand counts, and the two counters against the analytic count."""

import pytest
import torch

from fastformer_bench.impls.additive_eager import additive_attention_core
from fastformer_bench.impls.additive_naive import quadratic_additive_attention
from fastformer_bench.impls.softmax import naive_softmax_attention, sdpa_softmax_attention
from fastformer_bench.measure.flops import analytic_flops, counter_flops, fvcore_flops, minimal_bytes

# B=1, N=2, D=2, H=1 (Dh=2): small enough to count every operation by hand.
TINY = {"batch": 1, "seq_len": 2, "width": 2, "heads": 1}


def test_additive_linear_forward_by_hand():
    # per aggregation: 2 scores of 2 MACs (8), 2 scalings (2), softmax of 2 at 5 each (10),
    # weighted sum 2 tokens x 2 dims MACs (8), product 2x2 (4) = 32
    assert analytic_flops("additive", False, "core", "fwd", columns=2, **TINY) == 32
    assert analytic_flops("additive", False, "core", "fwd", columns=3, **TINY) == 64


def test_additive_quadratic_forward_by_hand():
    # the weighted sum becomes a [2x2] @ [2x2] matmul: 2·2·2 MACs = 16 FLOPs instead of 8
    assert analytic_flops("additive", True, "core", "fwd", columns=2, **TINY) == 40


def test_softmax_forward_by_hand():
    # QK^T: 4 scores of 2 MACs (16), scale 4, softmax 4x5 (20), AV: 4 outputs of 2 MACs (16) = 56
    assert analytic_flops("softmax", True, "core", "fwd", columns=3, **TINY) == 56


def test_backward_roughly_doubles_matmul_work():
    big = {"batch": 2, "seq_len": 1024, "width": 512, "heads": 1, "columns": 3}
    for family, quadratic in (("additive", False), ("additive", True), ("softmax", True)):
        fwd = analytic_flops(family, quadratic, "core", "fwd", **big)
        both = analytic_flops(family, quadratic, "core", "fwd_bwd", **big)
        assert 2.7 < both / fwd < 3.1, family


def test_layer_adds_the_projections():
    shape = {"batch": 2, "seq_len": 8, "width": 4, "heads": 2, "columns": 3}
    M, D, C = 16, 4, 3
    extra = analytic_flops("additive", False, "layer", "fwd", **shape) - analytic_flops(
        "additive", False, "core", "fwd", **shape)
    assert extra == (2 * M * D * C * D + M * C * D) + (2 * M * D * D + M * D) + M * D
    extra = analytic_flops("softmax", True, "layer", "fwd", **shape) - analytic_flops(
        "softmax", True, "core", "fwd", **shape)
    assert extra == (2 * M * D * 3 * D + M * 3 * D) + (2 * M * D * D + M * D)


def test_minimal_bytes_by_hand():
    # additive core, C=3, B·N·D = 4 elements, w = 2·2 elements: reads 12 + 4, writes 4 -> 20 elements
    assert minimal_bytes("additive", "core", "fwd", columns=3, dtype_bytes=4, **TINY) == 80
    # backward: grad_out 4 + inputs again 16 + their gradients 16
    assert minimal_bytes("additive", "core", "fwd_bwd", columns=3, dtype_bytes=4, **TINY) == (20 + 36) * 4
    assert minimal_bytes("softmax", "core", "fwd", columns=3, dtype_bytes=2, **TINY) == 16 * 2
    assert minimal_bytes("softmax", "layer", "fwd", columns=3, dtype_bytes=2, **TINY) > 16 * 2


def test_a_layer_moves_x_its_parameters_and_its_output_once():
    # the layer's true minimum, not the sum of its stages' traffic (which overstated it about 5x)
    shape = {"batch": 2, "seq_len": 64, "width": 8, "heads": 2}
    tokens, D = 2 * 64 * 8, 8
    params = {"additive": 3 * D * D + 3 * D + D * D + D + 2 * D, "softmax": 3 * D * D + 3 * D + D * D + D}
    for family, size in params.items():
        assert minimal_bytes(family, "layer", "fwd", columns=3, dtype_bytes=4, **shape) == (2 * tokens + size) * 4
        # backward: grad_out in, x and the parameters read again, their gradients out
        assert minimal_bytes(family, "layer", "fwd_bwd", columns=3, dtype_bytes=4, **shape) == \
            (2 * tokens + size + tokens + 2 * (tokens + size)) * 4


def test_unknown_arguments_are_rejected():
    with pytest.raises(ValueError):
        analytic_flops("linear", False, "core", "fwd", columns=3, **TINY)
    with pytest.raises(ValueError):
        minimal_bytes("additive", "core", "bwd", columns=3, dtype_bytes=4, **TINY)


def test_counter_says_unknown_not_zero_where_it_has_no_formula():
    # CPU SDPA runs one fused op FlopCounterMode has no formula for: that is not zero work
    q, k, v = torch.randn(3, 1, 16, 8)
    flops, missed = counter_flops(lambda: torch.nn.functional.scaled_dot_product_attention(
        q.view(1, 16, 2, 4).transpose(1, 2), k.view(1, 16, 2, 4).transpose(1, 2), v.view(1, 16, 2, 4).transpose(1, 2)))
    if not missed:
        pytest.skip("this torch counts SDPA on the CPU")
    assert flops is None


def test_counter_on_a_matmul_is_2mnk():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert counter_flops(lambda: a @ b) == (2 * 3 * 5 * 7, [])


def test_counter_names_the_ops_it_cannot_count():
    B, N, D, H = 2, 16, 8, 2
    x, w = torch.randn(3, B, N, D), torch.randn(2, H, D // H)
    flops, missed = counter_flops(lambda: additive_attention_core(x, w, None))
    assert flops == 2 * (2 * B * N * D)  # the pooling einsum per aggregation, as bmm (scores: a mul and a sum)
    assert {"aten::mul", "aten::sum", "aten::_softmax"} <= set(missed)
    assert not any(op in missed for op in ("aten::view", "aten::empty", "aten::select"))


def test_counter_matches_the_analytic_matmul_part_of_softmax():
    B, N, D, H = 2, 16, 8, 2
    q, k, v = torch.randn(3, B, N, D)
    flops, missed = counter_flops(lambda: naive_softmax_attention(q, k, v, H))
    analytic = analytic_flops("softmax", True, "core", "fwd", B, N, D, H, 3)
    assert flops == analytic - 6 * B * H * N * N  # scale + softmax are the uncounted part
    assert "aten::_softmax" in missed


@pytest.mark.parametrize("fn,family,quadratic", [
    (additive_attention_core, "additive", False),
    (quadratic_additive_attention, "additive", True),
])
def test_fvcore_equals_half_the_analytic_count_additive(fn, family, quadratic):
    B, N, D, H, C = 2, 16, 8, 2, 3
    x, w = torch.randn(C, B, N, D), torch.randn(C - 1, H, D // H)
    count, skipped = fvcore_flops(fn, (x, w, None))
    assert skipped == []
    assert count == analytic_flops(family, quadratic, "core", "fwd", B, N, D, H, C) // 2


@pytest.mark.parametrize("fn", [naive_softmax_attention, sdpa_softmax_attention])
def test_fvcore_equals_half_the_analytic_count_softmax(fn):
    B, N, D, H = 2, 16, 8, 2
    q, k, v = torch.randn(3, B, N, D)
    count, skipped = fvcore_flops(fn, (q, k, v, H, None))
    assert skipped == []
    assert count == analytic_flops("softmax", True, "core", "fwd", B, N, D, H, 3) // 2


def test_fvcore_counts_matrix_vector_products():
    m, v = torch.randn(3, 4, 5), torch.randn(5)
    assert fvcore_flops(torch.matmul, (m, v)) == (3 * 4 * 5, [])
    assert fvcore_flops(lambda a, b: torch.einsum("bij,j->bi", a, b), (m, v)) == (3 * 4 * 5, [])


def test_fvcore_reports_ops_it_cannot_count():
    count, skipped = fvcore_flops(lambda t: torch.cumsum(t, 0) @ t, (torch.randn(4, 4),))
    assert count == 4 * 4 * 4 and skipped == ["aten::cumsum"]


def test_fvcore_failure_is_reported_not_raised():
    def broken(t):
        raise RuntimeError("boom")
    count, reasons = fvcore_flops(broken, (torch.randn(2),))
    assert count is None and "boom" in reasons[0]
