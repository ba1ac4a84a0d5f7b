"""The streaming CPU implementation (impls/additive_stream.py) against the float64 quadratic reference.

The registry-wide suites (test_additive.py, test_layers.py) already run ``stream`` on their odd shapes, dtypes,
paddings, strides and gradchecks; this file covers what is its own: every shape x column count x mask in float64
(the kernels' double path) and float32 (the vectorised float path, taken when Dh % 8 == 0, and the scalar one
otherwise), N split into many chunks (partial softmaxes combined, chunks of padding only), one and two threads,
gradients of x alone or w alone, a grad_out with zero strides, NaN in padding, what backward keeps (only O(B·H·Dh)
besides the inputs), the build (a fresh cache directory, a missing compiler) and bad input.
"""

from __future__ import annotations

import pytest
import torch
from testkit.attention_cases import STREAM_SHAPES, make_assert_close, make_case, run, shape_params

import fastformer_bench as fb
from fastformer_bench.impls import additive_stream as stream

pytestmark = pytest.mark.skipif(stream.STREAM.unsupported_reason("cpu", torch.float32) is not None,
                                reason=str(stream.STREAM.unsupported_reason("cpu", torch.float32)))

#: relative tolerance by dtype; the absolute tolerance is this times the largest |expected| value
TOL = {torch.float64: 1e-11, torch.float32: 3e-6, torch.bfloat16: 4e-2, torch.float16: 5e-3}
assert_close = make_assert_close(TOL)

COLUMNS = [2, 3, 6]  # C = 4 too in test_additive.py, which runs every registered implementation
MASKS = [None, "ragged", "holes"]


def reference(x, w, mask, grad_out):
    return run(lambda x, w, m: fb.additive_attention(x, w, m, impl="reference"), x.double(), w.double(), mask,
               grad_out.double())


def streamed(chunk_n=None):
    return lambda x, w, mask: stream.stream_additive_attention(x, w, mask, chunk_n=chunk_n)


def check_against_reference(got, want, dtype):
    """Relative to each expected tensor's largest value; grad w at least relative to grad x's, since it can be
    exactly 0 (N = 1: a softmax over one token is constant), where rounding leaves a few ulps of grad x."""
    for name, a, b in zip(("out", "grad x", "grad w"), got, want):
        assert a.dtype == dtype, f"{name} has dtype {a.dtype}"
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        scale = float(b.abs().max()) if name != "grad w" else max(float(b.abs().max()), float(want[1].abs().max()))
        torch.testing.assert_close(a.double(), b, rtol=TOL[dtype], atol=TOL[dtype] * max(scale, 1e-12),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mask_kind", MASKS, ids=["nomask", "ragged", "holes"])
@pytest.mark.parametrize("C", COLUMNS, ids=lambda c: f"C{c}")
@pytest.mark.parametrize("shape", shape_params(STREAM_SHAPES))
def test_matches_reference(shape, C, mask_kind, dtype):
    """Default split, and N in chunks of 3 tokens (many partial softmaxes, some of padding only)."""
    B, N, H, Dh = shape
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=C)
    want = reference(x.to(dtype), w.to(dtype), mask, go.to(dtype))
    for chunk_n in (None, 3):
        got = run(streamed(chunk_n), x.to(dtype), w.to(dtype), mask, go.to(dtype))
        check_against_reference(got, want, dtype)
        if mask is not None:
            pad = ~mask
            assert torch.equal(got[0][pad], torch.zeros_like(got[0][pad]))
            assert torch.equal(got[1][:, pad], torch.zeros_like(got[1][:, pad]))


def cpu_supports(dtype: torch.dtype) -> bool:
    try:
        torch.softmax(torch.ones(2, 2, dtype=dtype) @ torch.ones(2, 2, dtype=dtype), dim=-1)
        return True
    except (RuntimeError, TypeError):
        return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("shape", shape_params(("N37-H3-Dh5", "N33-H2-Dh64")))
def test_low_precision_accumulates_in_float32(shape, dtype):
    if not cpu_supports(dtype):
        pytest.skip(f"{dtype} not supported on CPU")
    B, N, H, Dh = shape
    x, w, mask, go = make_case(4, B, N, H, Dh, "holes", seed=11)
    x, w, go = x.to(dtype), w.to(dtype), go.to(dtype)
    got = run(streamed(5), x, w, mask, go)
    check_against_reference(got, reference(x, w, mask, go), dtype)


@pytest.mark.parametrize("mask_kind", [None, "holes"], ids=["nomask", "holes"])
@pytest.mark.parametrize("C", [2, 3], ids=lambda c: f"C{c}")
def test_gradcheck(C, mask_kind):
    x, w, mask, _ = make_case(C, 2, 5, 2, 3, mask_kind, seed=12)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: stream.stream_additive_attention(x, w, mask, chunk_n=2), (x, w))


@pytest.fixture
def threads():
    """Set torch's intra-op thread count for a test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("chunk_n", [None, 37], ids=["auto", "chunk37"])
def test_one_and_two_threads_agree(threads, chunk_n):
    """Large enough (B·N·D >= 2^15) for the kernels to use both threads; both float paths, with padding."""
    for (B, N, H, Dh) in ((1, 600, 2, 64), (2, 300, 3, 5)):
        x, w, mask, go = make_case(3, B, N, H, Dh, "holes", seed=13)
        x, w, go = x.float(), w.float(), go.float()
        results = []
        for n in (1, 2):
            threads(n)
            results.append(run(streamed(chunk_n), x, w, mask, go))
        want = reference(x, w, mask, go)
        for one, two, ref, name in zip(*results, want, ("out", "grad x", "grad w")):
            assert_close(two, one, torch.float32, f"{name}: 2 threads vs 1")
            assert_close(two, ref, torch.float32, f"{name}: 2 threads vs reference")


def test_gradient_of_x_alone_and_w_alone():
    x, w, mask, go = make_case(3, 2, 29, 2, 16, "ragged", seed=14)
    want = reference(x, w, mask, go)
    xl = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(stream.stream_additive_attention(xl, w, mask), (xl,), go)
    wl = w.clone().requires_grad_(True)
    (gw,) = torch.autograd.grad(stream.stream_additive_attention(x, wl, mask), (wl,), go)
    assert_close(gx, want[1], torch.float64, "grad x alone")
    assert_close(gw, want[2], torch.float64, "grad w alone")


def test_strided_inputs_and_zero_stride_grad_out():
    """x a permuted view of [B, N, C*D] (a fused projection), w transposed, mask a strided view, and
    out.sum().backward() (whose grad_out has all strides 0)."""
    C, B, N, H, Dh = 3, 2, 23, 2, 8
    x, w, _, _ = make_case(C, B, N, H, Dh, seed=15)
    base = x.permute(1, 2, 0, 3).reshape(B, N, C * H * Dh).clone().requires_grad_(True)
    w_base = w.transpose(1, 2).contiguous().requires_grad_(True)
    wide = torch.ones(B, 2 * N, dtype=torch.bool)
    wide[1, 2 * (N // 2):] = False
    mask = wide[:, ::2]
    assert not mask.is_contiguous()
    xs = base.view(B, N, C, H * Dh).permute(2, 0, 1, 3)
    out = stream.stream_additive_attention(xs, w_base.transpose(1, 2), mask)
    out.float().sum().backward()
    ones = torch.ones(B, N, H * Dh, dtype=torch.float64)
    e_out, e_gx, e_gw = reference(x, w, mask.contiguous(), ones)
    assert_close(out.detach(), e_out, torch.float64, "out")
    assert_close(base.grad.view(B, N, C, H * Dh).permute(2, 0, 1, 3), e_gx, torch.float64, "grad x")
    assert_close(w_base.grad.transpose(1, 2), e_gw, torch.float64, "grad w")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_nan_in_padding_never_leaks(dtype):
    """Padding is never read: NaN and inf there leave every real output and gradient finite and unchanged."""
    x, w, mask, go = make_case(3, 2, 40, 2, 16, "holes", seed=16)
    x, w, go = x.to(dtype), w.to(dtype), go.to(dtype)
    clean = run(streamed(4), x, w, mask, go)
    dirty_x = x.clone()
    dirty_x[:, ~mask] = float("nan")
    dirty_x[0, ~mask] = float("inf")
    dirty = run(streamed(4), dirty_x, w, mask, go)
    for a, b in zip(dirty, clean):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("mask_kind", MASKS, ids=["nomask", "ragged", "holes"])
def test_reused_buffers_are_overwritten_everywhere(monkeypatch, mask_kind, dtype):
    """Forward's out and backward's dx come from the buffer cache, whose memory holds what its last user left:
    with every cached buffer full of NaN first, the results equal those in fresh torch.empty memory, bit for bit
    (padding rows included, which the kernels must zero themselves)."""
    import gc

    from fastformer_bench.impls import buffer_cache

    x, w, mask, go = make_case(3, 2, 40, 2, 16, mask_kind, seed=19)
    monkeypatch.setenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", "0")
    fresh = run(streamed(4), x.to(dtype), w.to(dtype), mask, go.to(dtype))
    monkeypatch.setenv("FASTFORMER_BENCH_STREAM_CACHE_MIB", "64")
    monkeypatch.setattr(buffer_cache, "MIN_BYTES", 1)  # this test's small buffers go through the cache too
    buffer_cache.release()
    poison = [buffer_cache.empty((1 << 19,), torch.float32).fill_(float("nan")) for _ in range(4)]
    del poison  # four idle 2 MiB mappings full of NaN: every buffer below 2 MiB takes one of them
    gc.collect()
    hits = buffer_cache.stats()["hits"]
    reused = run(streamed(4), x.to(dtype), w.to(dtype), mask, go.to(dtype))
    assert buffer_cache.stats()["hits"] >= hits + 2, "out and dx should both have come from the cache"
    for a, b in zip(reused, fresh):
        assert torch.equal(a, b)
    del reused
    gc.collect()
    buffer_cache.release()


def test_backward_saves_only_small_tensors():
    """Besides the inputs (x, w, mask), everything saved for backward is O(B·H·Dh): no [B, N, D] tensor."""
    C, B, N, H, Dh = 3, 2, 64, 2, 8
    x, w, mask, go = make_case(C, B, N, H, Dh, "ragged", seed=17)
    x.requires_grad_(True)
    w.requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = stream.stream_additive_attention(x, w, mask)
    inputs = {x.data_ptr(), w.data_ptr(), mask.data_ptr()}
    others = [t for t in saved if t.data_ptr() not in inputs]
    assert len(saved) > len(others), "the inputs are saved (they are alive anyway)"
    assert others and all(t.numel() <= (C - 1) * B * H * Dh for t in others), [tuple(t.shape) for t in others]
    assert sum(t.numel() for t in others) < B * N * H * Dh
    out.backward(go)  # and backward works from what was saved
    assert x.grad is not None and w.grad is not None


def test_forward_without_grad_and_under_inference_mode():
    x, w, mask, _ = make_case(4, 2, 17, 3, 8, "ragged", seed=18)
    want = fb.additive_attention(x, w, mask, impl="reference")
    with torch.no_grad():
        assert_close(stream.stream_additive_attention(x, w, mask), want, torch.float64, "no_grad")
    with torch.inference_mode():
        assert_close(stream.stream_additive_attention(x, w, mask), want, torch.float64, "inference_mode")


def test_bad_input_raises_value_error():
    x, w, _, _ = make_case(3, 1, 4, 2, 3)
    with pytest.raises(ValueError, match="rank 4"):
        fb.additive_attention(x[0], w, impl="stream")
    with pytest.raises(ValueError, match="C-1"):
        fb.additive_attention(x, w[:1], impl="stream")
    with pytest.raises(ValueError, match="chunk_n"):
        stream.stream_additive_attention(x, w, chunk_n=0)
    with pytest.raises(ValueError, match="real token"):
        fb.additive_attention(x, w, torch.zeros(1, 4, dtype=torch.bool), impl="stream")
    with pytest.raises(ValueError, match="does not support"):
        fb.additive_attention(x.to(torch.int32), w.to(torch.int32), impl="stream")


def test_unsupported_devices_and_dtypes_say_why():
    impl = fb.registry.get("stream")
    assert impl is stream.STREAM and not impl.compiles and impl.expected_exponent == (0.8, 1.2)
    assert "CPU" in impl.unsupported_reason("meta", torch.float32)
    assert "float32" in impl.unsupported_reason("cpu", torch.complex64)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        assert impl.unsupported_reason("cpu", dtype) is None


def test_missing_compiler_is_unsupported_with_a_reason(monkeypatch):
    monkeypatch.setattr(stream, "compiler", lambda: None)
    with pytest.raises(stream.BuildError, match="C\\+\\+ compiler"):
        stream._build_and_load()
    monkeypatch.setattr(stream, "_load", lambda: (None, "its C++ kernels need a C++ compiler"))
    assert stream.STREAM.unsupported_reason("cpu", torch.float32) == "its C++ kernels need a C++ compiler"
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        fb.additive_attention(*make_case(2, 1, 3, 1, 2)[:2], impl="stream")


def test_builds_into_a_fresh_cache_and_reuses_it(monkeypatch, tmp_path):
    """A fresh machine: the library is built into TORCH_EXTENSIONS_DIR, and a second load reuses the file."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lib = stream._build_and_load()
    built = sorted(tmp_path.rglob("*.so"))
    assert len(built) == 1 and lib.ffs_has_openmp() in (0, 1)
    mtime = built[0].stat().st_mtime_ns
    stream._build_and_load()
    assert sorted(tmp_path.rglob("*.so")) == built and built[0].stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".so"], "temporary files left"


@pytest.mark.parametrize("n_threads", [1, 2])
def test_large_outputs_match_eager_float64(threads, n_threads):
    """Outputs and gradients of 16 MiB and more take the kernels' streaming (non-temporal) stores; too large for
    the quadratic reference, so float64 eager (itself checked against the reference) is the truth."""
    C, B, N, H, Dh = 2, 1, 8192, 8, 64
    x, w, mask, go = make_case(C, B, N, H, Dh, "holes", seed=19)
    threads(n_threads)
    got = run(streamed(), x.float(), w.float(), mask, go.float())
    want = run(lambda x, w, m: fb.additive_attention(x, w, m, impl="eager"), x, w, mask, go)
    check_against_reference(got, want, torch.float32)
    pad = ~mask
    assert torch.equal(got[0][pad], torch.zeros_like(got[0][pad]))
    assert torch.equal(got[1][:, pad], torch.zeros_like(got[1][:, pad]))
