"""``out=`` on ``additive_attention`` (api.py): the result lands in the caller's buffer, which is returned as is
(same tensor, same data pointer), equal to the call without ``out``; torch's autograd rule for out= functions
(RuntimeError under grad mode when an input or ``out`` requires grad); shape, dtype, device and overlap refused
with one sentence (ValueError). ``stream`` writes into a contiguous ``out`` itself (no copy: its kernels are
handed the pointer); the other implementations copy their result in."""

from __future__ import annotations

import pytest
import torch
from testkit.attention_cases import make_case, registered

import fastformer_bench as fb
from fastformer_bench import api
from fastformer_bench.impls import additive_stream as stream

#: every registered additive implementation that does not compile (compiled takes eager's copy path); one that
#: cannot run on this CPU is skipped with its reason
IMPLS = registered(fb.impls.ADDITIVE, compiles=False)
#: odd shapes (C, B, N, H, Dh, mask): N and Dh not multiples of 8, a padded batch, the vectorised float path
CASES = [(3, 2, 37, 3, 5, "ragged"), (2, 1, 19, 2, 136, None), (4, 3, 45, 3, 16, "holes")]

needs_stream = pytest.mark.skipif(stream.STREAM.unsupported_reason("cpu", torch.float32) is not None,
                                  reason=str(stream.STREAM.unsupported_reason("cpu", torch.float32)))


def _inputs(case):
    C, B, N, H, Dh, mask_kind = case
    x, w, mask, _ = make_case(C, B, N, H, Dh, mask_kind)
    return x.float(), w.float(), mask


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"C{c[0]}-B{c[1]}-N{c[2]}-H{c[3]}-Dh{c[4]}-{c[5]}")
@pytest.mark.parametrize("impl", IMPLS)
def test_out_is_written_returned_and_equal(impl, case):
    x, w, mask = _inputs(case)
    want = fb.additive_attention(x, w, mask, impl=impl)
    out = torch.full_like(want, float("nan"))
    ptr = out.data_ptr()
    got = fb.additive_attention(x, w, mask, impl=impl, out=out)
    assert got is out and out.data_ptr() == ptr
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@needs_stream
def test_stream_writes_into_out_without_a_copy(monkeypatch):
    """The kernels get out's own pointer, and no tensor of the result's size is allocated besides it."""
    x, w, mask = _inputs(CASES[2])
    out = torch.empty(x.shape[1:], dtype=x.dtype)
    handed = []
    real = stream._forward

    def spy(*args, **kwargs):
        handed.append(kwargs.get("out"))
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "_forward", spy)
    monkeypatch.setattr(torch.Tensor, "copy_", lambda *a, **k: pytest.fail("out= was filled by a copy"))
    assert fb.additive_attention(x, w, mask, impl="stream", out=out) is out
    assert len(handed) == 1 and handed[0] is out
    assert api.writes_out(fb.impls.get("stream")) and not api.writes_out(fb.impls.get("eager"))


@needs_stream
def test_stream_strided_out_is_filled_by_a_copy():
    x, w, mask = _inputs(CASES[0])
    want = fb.additive_attention(x, w, mask, impl="stream")
    big = torch.zeros(want.shape[0], want.shape[1], 2 * want.shape[2])
    out = big[..., ::2]
    assert fb.additive_attention(x, w, mask, impl="stream", out=out) is out
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert bool((big[..., 1::2] == 0).all())  # nothing written between out's elements


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("who", ["x", "w", "out"])
def test_out_refuses_autograd_under_grad_mode(impl, who):
    x, w, mask = _inputs(CASES[0])
    out = torch.empty(x.shape[1:])
    {"x": x, "w": w, "out": out}[who].requires_grad_(True)
    with pytest.raises(RuntimeError, match="out= does not support autograd"):
        fb.additive_attention(x, w, mask, impl=impl, out=out)
    if who != "out":
        with torch.no_grad():  # torch's rule: without grad mode the same call is fine
            assert fb.additive_attention(x, w, mask, impl=impl, out=out) is out


@pytest.mark.parametrize("impl", IMPLS)
def test_out_refuses_wrong_shape_dtype_and_overlap(impl):
    x, w, mask = _inputs(CASES[0])
    C, B, N, D = x.shape
    bad = {
        "shape": (torch.empty(B, N + 1, D), r"out must have the result's shape \[B, N, D\] = \[2, 37, 15\]"),
        "rank": (torch.empty(N, D), "out must have the result's shape"),
        "dtype": (torch.empty(B, N, D, dtype=torch.float64), "out must have the inputs' dtype torch.float32"),
        "type": (x[0].numpy(), "out must be a torch.Tensor or None"),
        "overlap": (x[C - 1], "out overlaps the memory of x"),
    }
    for out, message in bad.values():
        with pytest.raises(ValueError, match=message):
            fb.additive_attention(x, w, mask, impl=impl, out=out)
    with pytest.raises(ValueError) as info:
        fb.additive_attention(x, w, mask, impl=impl, out=torch.empty(B, N, D + 1))
    assert str(info.value).endswith(".") and str(info.value).count(". ") == 0  # one sentence
