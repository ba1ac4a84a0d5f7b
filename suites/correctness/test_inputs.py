"""Bad input raises ValueError with a sentence that names the problem (docs/design.md §2), and the registry lists
the design card's six implementations first, in the card's order, the ones added since after them
(docs/design.md §2.2)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import fastformer_bench as fb
from fastformer_bench import impls as registry

DESIGN_NAMES = ["reference", "eager", "compiled", "triton", "softmax_naive", "softmax_sdpa"]
ADDITIVE = ["reference", "eager", "compiled"]  # bad inputs are rejected before anything is compiled
SOFTMAX = ["softmax_naive", "softmax_sdpa"]


def raises(match: str):
    """pytest.raises(ValueError) whose message matches and reads as a sentence."""
    return pytest.raises(ValueError, match=match)


def check_sentence(excinfo) -> None:
    msg = str(excinfo.value)
    assert len(msg.split()) >= 4 and msg.rstrip().endswith("."), f"not a sentence: {msg!r}"


def good_additive(C=3, B=2, N=5, H=2, Dh=3, dtype=torch.float32):
    x = torch.randn(C, B, N, H * Dh, dtype=dtype)
    w = torch.randn(C - 1, H, Dh, dtype=dtype)
    return x, w


def good_qkv(B=2, N=5, D=6, dtype=torch.float32):
    return torch.randn(B, N, D, dtype=dtype), torch.randn(B, N, D, dtype=dtype), torch.randn(B, N, D, dtype=dtype)


# -- registry ----------------------------------------------------------------------------------------------------


def test_registry_lists_the_design_names():
    # DESIGN's names first, in their order (their display order and colours follow it); newer ones after
    assert registry.names()[: len(DESIGN_NAMES)] == DESIGN_NAMES
    assert fb.registry is registry


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_registry_get(name):
    impl = registry.get(name)
    assert impl.name == name
    assert impl.family == ("softmax" if name.startswith("softmax_") else "additive")
    assert impl.reference == ("softmax_naive" if impl.family == "softmax" else "reference")


def test_registry_unknown_name():
    with raises(r"unknown implementation 'nope'") as e:
        registry.get("nope")
    check_sentence(e)


# -- additive: shapes, dtypes, devices ------------------------------------------------------------------------------

ADDITIVE_BAD = {
    "x-rank3": (lambda: (torch.randn(2, 5, 6), torch.randn(1, 2, 3), None), r"x must have rank 4"),
    "x-rank5": (lambda: (torch.randn(3, 2, 5, 6, 1), torch.randn(2, 2, 3), None), r"x must have rank 4"),
    "w-rank2": (lambda: (torch.randn(3, 2, 5, 6), torch.randn(2, 6), None), r"w must have rank 3"),
    "D-not-H-times-Dh": (lambda: (torch.randn(3, 2, 5, 7), torch.randn(2, 2, 3), None),
                         r"width D = 7 must equal heads \* head size = 2 \* 3"),
    "C1": (lambda: (torch.randn(1, 2, 5, 6), torch.randn(0, 2, 3), None), r"at least C = 2 columns, got C = 1"),
    "w-count": (lambda: (torch.randn(3, 2, 5, 6), torch.randn(3, 2, 3), None), r"C-1 = 2 static queries, got 3"),
    "N0": (lambda: (torch.randn(3, 2, 0, 6), torch.randn(2, 2, 3), None), r"sequence length must be >= 1"),
    "empty-mask-row": (lambda: (*good_additive(), torch.tensor([[True] * 5, [False] * 5])),
                       r"at least one real token"),
    "mask-shape": (lambda: (*good_additive(), torch.ones(2, 4, dtype=torch.bool)), r"mask must have shape"),
    "mask-dtype": (lambda: (*good_additive(), torch.ones(2, 5)), r"mask must have dtype torch.bool"),
    "mixed-dtype": (lambda: (torch.randn(3, 2, 5, 6), torch.randn(2, 2, 3, dtype=torch.float64), None),
                    r"x has dtype torch.float32 but w has dtype torch.float64"),
    "int-dtype": (lambda: (torch.ones(3, 2, 5, 6, dtype=torch.int64), torch.ones(2, 2, 3, dtype=torch.int64), None),
                  r"floating-point"),
    "mixed-device-w": (lambda: (torch.randn(3, 2, 5, 6), torch.randn(2, 2, 3, device="meta"), None),
                       r"x is on cpu but w is on meta"),
    "mixed-device-mask": (lambda: (*good_additive(), torch.ones(2, 5, dtype=torch.bool, device="meta")),
                          r"mask is on meta but the inputs are on cpu"),
    "x-not-tensor": (lambda: ([[1.0]], torch.randn(2, 2, 3), None), r"must be torch.Tensors"),
}


@pytest.mark.parametrize("case", [pytest.param(v, id=k) for k, v in ADDITIVE_BAD.items()])
@pytest.mark.parametrize("impl", ADDITIVE)
def test_additive_bad_input(impl, case):
    make, match = case
    x, w, mask = make()
    with raises(match) as e:
        fb.additive_attention(x, w, mask, impl=impl)
    check_sentence(e)


def test_mixed_device_meta_input_first():
    """x on meta, w on the CPU: still a device sentence, not a crash inside an op."""
    x = torch.randn(3, 2, 5, 6, device="meta")
    w = torch.randn(2, 2, 3)
    with raises(r"x is on meta but w is on cpu"):
        fb.additive_attention(x, w, impl="eager")


# -- softmax --------------------------------------------------------------------------------------------------------

SOFTMAX_BAD = {
    "q-rank2": (lambda: (torch.randn(5, 6), *good_qkv()[1:], 2, None), r"q must have rank 3"),
    "v-rank4": (lambda: (*good_qkv()[:2], torch.randn(2, 5, 6, 1), 2, None), r"v must have rank 3"),
    "shape-mismatch": (lambda: (*good_qkv()[:2], torch.randn(2, 4, 6), 2, None), r"q, k, v must have one shape"),
    "heads-not-dividing": (lambda: (*good_qkv(), 4, None), r"width D = 6 is not divisible by heads H = 4"),
    "heads-zero": (lambda: (*good_qkv(), 0, None), r"heads must be a positive integer"),
    "heads-float": (lambda: (*good_qkv(), 2.0, None), r"heads must be a positive integer"),
    "N0": (lambda: (*good_qkv(N=0), 2, None), r"sequence length must be >= 1"),
    "empty-mask-row": (lambda: (*good_qkv(), 2, torch.tensor([[True] * 5, [False] * 5])), r"at least one real token"),
    "mask-shape": (lambda: (*good_qkv(), 2, torch.ones(5, 2, dtype=torch.bool)), r"mask must have shape"),
    "mixed-dtype": (lambda: (*good_qkv()[:2], torch.randn(2, 5, 6, dtype=torch.float64), 2, None),
                    r"different dtypes"),
    "mixed-device": (lambda: (good_qkv()[0], torch.randn(2, 5, 6, device="meta"), good_qkv()[2], 2, None),
                     r"different devices"),
    "mixed-device-mask": (lambda: (*good_qkv(), 2, torch.ones(2, 5, dtype=torch.bool, device="meta")),
                          r"mask is on meta but the inputs are on cpu"),
    "int-dtype": (lambda: (*(t.long() for t in good_qkv()), 2, None), r"floating-point"),
}


@pytest.mark.parametrize("case", [pytest.param(v, id=k) for k, v in SOFTMAX_BAD.items()])
@pytest.mark.parametrize("impl", SOFTMAX)
def test_softmax_bad_input(impl, case):
    make, match = case
    q, k, v, heads, mask = make()
    with raises(match) as e:
        fb.softmax_attention(q, k, v, heads, mask, impl=impl)
    check_sentence(e)


# -- implementation names and devices ------------------------------------------------------------------------------


def test_unknown_impl_name():
    x, w = good_additive()
    with raises(r"unknown implementation 'fast'"):
        fb.additive_attention(x, w, impl="fast")
    with raises(r"unknown implementation"):
        fb.softmax_attention(*good_qkv(), 2, impl="flash")


def test_impl_not_a_string():
    x, w = good_additive()
    with raises(r"impl must be an implementation name"):
        fb.additive_attention(x, w, impl=None)


@pytest.mark.parametrize("impl", SOFTMAX + ["sdpa", "naive"])
def test_softmax_impl_passed_to_additive_attention(impl):
    x, w = good_additive()
    if impl in ("sdpa", "naive"):  # short names exist only for the softmax family
        with raises(r"unknown implementation"):
            fb.additive_attention(x, w, impl=impl)
        return
    with raises(r"computes softmax attention, not additive attention") as e:
        fb.additive_attention(x, w, impl=impl)
    check_sentence(e)


@pytest.mark.parametrize("impl", ADDITIVE)
def test_additive_impl_passed_to_softmax_attention(impl):
    with raises(rf"implementation '{impl}' computes additive attention, not softmax attention") as e:
        fb.softmax_attention(*good_qkv(), 2, impl=impl)
    check_sentence(e)


def test_unsupported_device_raises(monkeypatch):
    """An implementation whose ``supports`` gives a reason is refused with that reason."""
    eager = registry.get("eager")
    fake = dataclasses.replace(eager, supports=lambda device, dtype: "no kernel for this device in the test")
    monkeypatch.setitem(registry.REGISTRY.loaded, "eager", fake)
    x, w = good_additive()
    with raises(r"implementation 'eager' does not support cpu/torch.float32: no kernel for this device in the test"):
        fb.additive_attention(x, w, impl="eager")
    monkeypatch.undo()
    assert fb.additive_attention(x, w, impl="eager").shape == (2, 5, 6)


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    triton = registry.get("triton")
    reason = triton.unsupported_reason("cpu", torch.float32)
    assert isinstance(reason, str) and len(reason.split()) >= 3, reason
    x, w = good_additive()
    with raises(r"implementation 'triton' does not support cpu"):
        fb.additive_attention(x, w, impl="triton")


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_every_unsupported_reason_is_a_sentence_or_none(name):
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        reason = registry.get(name).unsupported_reason("cpu", dtype)
        assert reason is None or (isinstance(reason, str) and reason.strip())


# -- layers ---------------------------------------------------------------------------------------------------------


def test_layer_constructor_errors():
    with raises(r"not divisible by heads"):
        fb.FastformerLayer(15, 4)
    with raises(r"columns must be an integer >= 2"):
        fb.FastformerLayer(16, 4, columns=1)
    with raises(r"positive integers"):
        fb.FastformerLayer(0, 1)
    with raises(r"computes softmax attention, not additive"):
        fb.FastformerLayer(16, 4, impl="softmax_sdpa")
    with raises(r"not divisible by heads"):
        fb.SoftmaxAttentionLayer(15, 4)
    with raises(r"computes additive attention, not softmax"):
        fb.SoftmaxAttentionLayer(16, 4, impl="eager")


@pytest.mark.parametrize("layer", [lambda: fb.FastformerLayer(6, 2), lambda: fb.SoftmaxAttentionLayer(6, 2)],
                         ids=["fastformer", "softmax"])
def test_layer_input_errors(layer):
    layer = layer()
    with raises(r"the layer input must be \[B, N, 6\]"):
        layer(torch.randn(2, 5, 7))
    with raises(r"the layer input must be \[B, N, 6\]"):
        layer(torch.randn(5, 6))
    with raises(r"at least one real token"):
        layer(torch.randn(2, 5, 6), torch.tensor([[True] * 5, [False] * 5]))
