"""Softmax attention: softmax_naive against multi-head attention written out by hand, softmax_sdpa against
softmax_naive in float64 and the lower dtypes (forward and the gradients of q, k, v), padding, strides,
gradcheck, and the static-query equivalence of docs/design.md §1 (additive attention's pooling *is* softmax attention
whose query is the learned w_c for every token and whose keys and values are G_c).
"""

from __future__ import annotations

import math

import pytest
import torch
from testkit.attention_cases import low_dtype_params, make_assert_close, make_mask, registered, shape_params

import fastformer_bench as fb

SOFTMAX_IMPLS = registered(fb.registry.SOFTMAX)

# -- helpers ------------------------------------------------------------------------------------------------

#: relative tolerance by dtype; the absolute tolerance is this times the largest |expected| value
TOL = {torch.float64: 1e-11, torch.float32: 3e-6, torch.bfloat16: 1.5e-2, torch.float16: 2.5e-3}


def cpu_supports(dtype: torch.dtype) -> bool:
    try:
        a = torch.ones(1, 1, 2, 2, dtype=dtype)
        torch.nn.functional.scaled_dot_product_attention(a, a, a)
        return True
    except (RuntimeError, TypeError):
        return False


LOW_DTYPES = low_dtype_params(cpu_supports)


assert_close = make_assert_close(TOL)


def make_qkv(B: int, N: int, H: int, Dh: int, mask_kind: str | None = None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, go = torch.randn(4, B, N, H * Dh, generator=gen, dtype=torch.float64)
    return q, k, v, make_mask(B, N, mask_kind, gen), go


def run(fn, q, k, v, mask, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves, mask)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return (out.detach(), *grads)


def impl_fn(name: str, heads: int):
    return lambda q, k, v, mask: fb.softmax_attention(q, k, v, heads, mask, impl=name)


def by_hand(q, k, v, heads, mask=None):
    """Multi-head softmax attention, one (b, h) at a time, float64; masked keys get no weight and masked query
    rows are zero (the package's padding contract)."""
    B, N, D = q.shape
    Dh = D // heads
    rows = []
    for b in range(B):
        outs = []
        for h in range(heads):
            cols = slice(h * Dh, (h + 1) * Dh)
            qs, ks, vs = q[b, :, cols].double(), k[b, :, cols].double(), v[b, :, cols].double()
            s = qs @ ks.T / math.sqrt(Dh)  # [N queries, N keys]
            if mask is not None:
                s = torch.where(mask[b][None, :], s, torch.full_like(s, float("-inf")))
            e = torch.exp(s - s.max(dim=1, keepdim=True).values)
            outs.append((e / e.sum(dim=1, keepdim=True)) @ vs)
        row = torch.cat(outs, dim=1)
        if mask is not None:
            row = row * mask[b][:, None]
        rows.append(row)
    return torch.stack(rows)


MASKS = [None, "ragged", "holes"]
MASK_IDS = ["nomask", "ragged", "holes"]
SHAPE_PARAMS = shape_params()


# -- float64 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", SHAPE_PARAMS)
def test_naive_matches_by_hand(shape, mask_kind):
    B, N, H, Dh = shape
    q, k, v, mask, go = make_qkv(B, N, H, Dh, mask_kind)
    got = run(impl_fn("softmax_naive", H), q, k, v, mask, go)
    want = run(lambda q, k, v, m: by_hand(q, k, v, H, m), q, k, v, mask, go)
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, want):
        assert_close(a, b, torch.float64, name)


@pytest.mark.parametrize("mask_kind", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", SHAPE_PARAMS)
def test_sdpa_matches_naive_float64(shape, mask_kind):
    B, N, H, Dh = shape
    q, k, v, mask, go = make_qkv(B, N, H, Dh, mask_kind, seed=1)
    got = run(impl_fn("sdpa", H), q, k, v, mask, go)  # the short name resolves to softmax_sdpa
    want = run(impl_fn("softmax_naive", H), q, k, v, mask, go)
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, want):
        assert_close(a, b, torch.float64, name)


@pytest.mark.parametrize("mask_kind", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", SHAPE_PARAMS)
def test_blocked_matches_naive_float64_across_several_blocks(shape, mask_kind, monkeypatch):
    """The large-N ground truth in blocks of query rows (recomputed in backward) against the materialised form,
    with a block budget small enough that every shape is split, most of them into blocks of unequal length."""
    from fastformer_bench.impls import softmax

    B, N, H, Dh = shape
    rows_seen = []
    real_rows = softmax._rows
    monkeypatch.setattr(softmax, "_rows", lambda qh, *rest: rows_seen.append(qh.shape[2]) or real_rows(qh, *rest))
    monkeypatch.setattr(softmax, "BLOCK_BYTES", 2 * B * H * N * 8 * 3)  # three query rows per block
    q, k, v, mask, go = make_qkv(B, N, H, Dh, mask_kind, seed=2)
    got = run(impl_fn("softmax_blocked", H), q, k, v, mask, go)
    assert rows_seen and max(rows_seen) == min(3, N), "the N x N scores were built in one piece"
    assert sum(rows_seen) == 2 * N  # each row once forward, once more when the backward recomputes its block
    want = run(impl_fn("softmax_naive", H), q, k, v, mask, go)
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, want):
        assert_close(a, b, torch.float64, name)


# -- lower dtypes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", [None, "ragged"], ids=["nomask", "ragged"])
@pytest.mark.parametrize("shape", shape_params(("N37-H3-Dh5", "N16-H1-Dh24")))
@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_low_precision_matches_naive_float64(impl, dtype, shape, mask_kind):
    B, N, H, Dh = shape
    q, k, v, mask, go = make_qkv(B, N, H, Dh, mask_kind, seed=2)
    q, k, v, go = (t.to(dtype) for t in (q, k, v, go))
    got = run(impl_fn(impl, H), q, k, v, mask, go)
    assert all(t.dtype == dtype for t in got)
    want = run(impl_fn("softmax_naive", H), q.double(), k.double(), v.double(), mask, go.double())
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, want):
        assert_close(a, b, dtype, name)


# -- padding -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_padding_is_exactly_zero_and_does_not_leak(impl, dtype):
    B, N, H, Dh = 3, 37, 3, 5
    q, k, v, mask, go = make_qkv(B, N, H, Dh, "holes", seed=3)
    assert (~mask).any()
    q, k, v, go = (t.to(dtype) for t in (q, k, v, go))
    out, gq, gk, gv = run(impl_fn(impl, H), q, k, v, mask, go)
    pad = ~mask
    assert torch.equal(out[pad], torch.zeros_like(out[pad])), "padded query rows must be exactly zero"
    for name, g in (("q", gq), ("k", gk), ("v", gv)):
        assert torch.equal(g[pad], torch.zeros_like(g[pad])), f"gradient of {name} at padded tokens"
        assert g[mask].abs().sum() > 0

    noisy = [t.clone() for t in (q, k, v)]
    for t in noisy:
        t[pad] = 100 * torch.randn_like(t[pad])
    got = run(impl_fn(impl, H), *noisy, mask, go)
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), got, (out, gq, gk, gv)):
        assert_close(a, b, dtype, f"{name} with noisy padding")


# -- strided inputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["chunk", "permute"])
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_strided_inputs(impl, layout):
    B, N, H, Dh = 2, 37, 3, 5
    D = H * Dh
    q, k, v, mask, go = make_qkv(B, N, H, Dh, "ragged", seed=4)
    base = torch.stack((q, k, v), dim=2).reshape(B, N, 3 * D).requires_grad_(True)  # [B, N, 3D]
    if layout == "chunk":
        sq, sk, sv = base.chunk(3, dim=-1)
    else:
        sq, sk, sv = base.view(B, N, 3, D).permute(2, 0, 1, 3)
    assert not sq.is_contiguous()
    out = fb.softmax_attention(sq, sk, sv, H, mask, impl=impl)
    (gbase,) = torch.autograd.grad(out, base, go)
    gq, gk, gv = gbase.view(B, N, 3, D).unbind(2)
    want = run(impl_fn("softmax_naive", H), q, k, v, mask, go)
    for name, a, b in zip(("out", "grad q", "grad k", "grad v"), (out, gq, gk, gv), want):
        assert_close(a, b, torch.float64, name)


# -- gradcheck -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", [None, "ragged"], ids=["nomask", "ragged"])
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_gradcheck(impl, mask_kind):
    q, k, v, mask, _ = make_qkv(2, 4, 2, 3, mask_kind, seed=5)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: fb.softmax_attention(q, k, v, 2, mask, impl=impl), inputs)


# -- static-query equivalence (docs/design.md §1) ----------------------------------------------------------------------


def global_vector(G: torch.Tensor, w_c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """g_c [B, H, Dh] by the definition: a softmax over tokens of <G_c, w_c> / sqrt(Dh), then a weighted sum."""
    B, N, D = G.shape
    H, Dh = w_c.shape
    Gh = G.view(B, N, H, Dh)
    s = (Gh * w_c).sum(-1) / math.sqrt(Dh)  # [B, N, H]
    if mask is not None:
        s = s.masked_fill(~mask[..., None], float("-inf"))
    a = torch.exp(s - s.amax(dim=1, keepdim=True))
    a = a / a.sum(dim=1, keepdim=True)
    return (a[..., None] * Gh).sum(dim=1)  # [B, H, Dh]


@pytest.mark.parametrize("mask_kind", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("C", [2, 4], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_static_query_equivalence(impl, C, mask_kind):
    """softmax_attention(query = w_c for every token, keys = values = G_c) gives g_c on every (real) row, and
    chaining it C-1 times rebuilds additive attention."""
    B, N, H, Dh = 2, 37, 3, 5
    D = H * Dh
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(C, B, N, D, generator=gen, dtype=torch.float64)
    w = torch.randn(C - 1, H, Dh, generator=gen, dtype=torch.float64) / math.sqrt(Dh)
    mask = make_mask(B, N, mask_kind, gen)
    real = torch.ones(B, N, dtype=torch.bool) if mask is None else mask

    G_def = x[0]  # G_c by the definition
    G_chain = x[0]  # G_c rebuilt from softmax attention alone
    for c in range(C - 1):
        query = w[c].reshape(1, 1, D).expand(B, N, D)  # the same learned query for every token
        rows = fb.softmax_attention(query, G_def, G_def, H, mask, impl=impl)  # [B, N, D]
        g = global_vector(G_def, w[c], mask).reshape(B, 1, D)
        expected = torch.where(real[..., None], g.expand(B, N, D), torch.zeros(()).double())
        assert_close(rows, expected, torch.float64, f"column {c}: rows != g_c")
        # every real row is the same vector
        for b in range(B):
            r = rows[b][real[b]]
            assert_close(r, r[:1].expand_as(r), torch.float64, "rows differ")

        G_chain = x[c + 1] * fb.softmax_attention(query, G_chain, G_chain, H, mask, impl=impl)
        G_def = x[c + 1] * g
    want = fb.additive_attention(x, w, mask, impl="reference")
    assert_close(G_chain * real[..., None], want, torch.float64, "chain of static-query softmax attention")
    assert_close(G_def * real[..., None], want, torch.float64, "definition")
