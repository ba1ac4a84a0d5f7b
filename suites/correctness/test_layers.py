"""The layer scope against layers written out by hand from the layer's own parameters.

- FastformerLayer(share_qv=True), C = 3: the paper's layer (Wu et al. 2021, eqs. 3-6 and r = Linear(u) + q).
- FastformerLayer(share_qv=False) and C = 2, 3, 4 (and C = 4 with share_qv=True): the generic chain.
- SoftmaxAttentionLayer: qkv projection, per-head softmax attention, output projection, with
  torch.nn.functional; and against torch.nn.MultiheadAttention on the real rows.

Outputs and the gradients of the input and of every parameter are compared.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from testkit.attention_cases import make_assert_close, registered

import fastformer_bench as fb

#: additive implementations that do not compile: every odd shape is affordable for them
PLAIN_ADDITIVE = registered(fb.registry.ADDITIVE, compiles=False)
SOFTMAX_IMPLS = registered(fb.registry.SOFTMAX)

TOL = {torch.float64: 1e-11, torch.float32: 1e-5}


assert_close = make_assert_close(TOL)


def ragged(B: int, N: int, gen: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(1, N + 1, (B,), generator=gen)
    lengths[0], lengths[-1] = N, max(1, N // 3)
    return torch.arange(N)[None, :] < lengths[:, None]


def inputs(B: int, N: int, D: int, masked: bool, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=gen, dtype=torch.float64).to(dtype)
    go = torch.randn(B, N, D, generator=gen, dtype=torch.float64).to(dtype)
    return x, (ragged(B, N, gen) if masked else None), go


def compare_with_hand(layer: torch.nn.Module, hand, x, mask, go, dtype) -> None:
    """Layer vs hand(layer, x, mask): output, grad of x, grad of every parameter."""
    params = dict(layer.named_parameters())
    assert params, "the layer has parameters"
    x = x.detach().clone().requires_grad_(True)
    out = layer(x, mask)
    got = torch.autograd.grad(out, [x, *params.values()], go)
    want_out = hand(layer, x, mask)
    want = torch.autograd.grad(want_out, [x, *params.values()], go)
    assert out.dtype == dtype
    assert_close(out, want_out, dtype, "out")
    for name, a, b in zip(["x", *params], got, want):
        assert_close(a, b, dtype, f"grad {name}")


def pool(t: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per head: softmax over tokens of <t, w> / sqrt(Dh), then the weighted sum. t [B, N, H, Dh], w [H, Dh]."""
    Dh = t.shape[-1]
    s = torch.einsum("bnhd,hd->bnh", t, w) / math.sqrt(Dh)
    if mask is not None:
        s = s.masked_fill(~mask[..., None], float("-inf"))
    weights = torch.softmax(s, dim=1)  # over the tokens
    return torch.einsum("bnh,bnhd->bhd", weights, t)


# -- FastformerLayer --------------------------------------------------------------------------------------------


def paper_layer(layer, x, mask):
    """The paper's C = 3 layer with value = query, from the layer's own weights."""
    B, N, D = x.shape
    H = layer.heads
    Dh = D // H
    W, b = layer.project.weight, layer.project.bias
    assert W.shape == (2 * D, D), "share_qv=True projects to two columns (q, k) only"
    q = x @ W[:D].T + b[:D]  # q_i = W_q x_i + b_q
    k = x @ W[D:].T + b[D:]  # k_i = W_k x_i + b_k
    qh, kh = q.view(B, N, H, Dh), k.view(B, N, H, Dh)
    w_q, w_k = layer.query[0], layer.query[1]

    alpha = torch.einsum("bnhd,hd->bnh", qh, w_q) / math.sqrt(Dh)  # alpha_i = softmax(w_q . q_i / sqrt(Dh))
    if mask is not None:
        alpha = alpha.masked_fill(~mask[..., None], float("-inf"))
    alpha = torch.softmax(alpha, dim=1)
    global_q = (alpha[..., None] * qh).sum(dim=1)  # [B, H, Dh]
    p = global_q[:, None] * kh  # p_i = q * k_i
    beta = torch.einsum("bnhd,hd->bnh", p, w_k) / math.sqrt(Dh)
    if mask is not None:
        beta = beta.masked_fill(~mask[..., None], float("-inf"))
    beta = torch.softmax(beta, dim=1)
    global_k = (beta[..., None] * p).sum(dim=1)  # pools p_i, not k_i
    u = (global_k[:, None] * qh).reshape(B, N, D)  # u_i = k * v_i with v_i = q_i
    if mask is not None:
        u = u * mask[..., None]
    return F.linear(u, layer.out.weight, layer.out.bias) + q  # r_i = Linear(u_i); output = r_i + q_i


def chain_layer(layer, x, mask):
    """The generic layer: C projected columns (the last = the first when share_qv), the chain, Linear, residual."""
    B, N, D = x.shape
    H, C = layer.heads, layer.columns
    Dh = D // H
    W, b = layer.project.weight, layer.project.bias
    projected = C - 1 if layer.share_qv else C
    assert W.shape == (projected * D, D)
    cols = [F.linear(x, W[c * D:(c + 1) * D], b[c * D:(c + 1) * D]) for c in range(projected)]
    if layer.share_qv:
        cols.append(cols[0])
    G = cols[0].view(B, N, H, Dh)
    for c in range(C - 1):
        g = pool(G, layer.query[c], mask)  # the global vector of column c
        G = cols[c + 1].view(B, N, H, Dh) * g[:, None]
    u = G.reshape(B, N, D)
    if mask is not None:
        u = u * mask[..., None]
    return F.linear(u, layer.out.weight, layer.out.bias) + cols[0]


def make_fastformer(width, heads, columns, share_qv, impl, dtype, seed=0):
    torch.manual_seed(seed)
    layer = fb.FastformerLayer(width, heads, columns=columns, share_qv=share_qv, impl=impl).to(dtype)
    with torch.no_grad():  # non-trivial biases, so a dropped bias shows
        layer.project.bias.normal_()
        layer.out.bias.normal_()
    return layer


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "ragged"])
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_fastformer_share_qv_is_the_paper_layer(impl, masked, dtype):
    layer = make_fastformer(15, 3, 3, True, impl, dtype)
    x, mask, go = inputs(2, 37, 15, masked, dtype, seed=1)
    compare_with_hand(layer, paper_layer, x, mask, go, dtype)
    compare_with_hand(layer, chain_layer, x, mask, go, dtype)  # the generic chain agrees with the paper


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "ragged"])
@pytest.mark.parametrize("columns,share_qv", [(2, False), (3, False), (4, False), (4, True)],
                         ids=["C2", "C3", "C4", "C4-share_qv"])
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_fastformer_chain(impl, columns, share_qv, masked):
    layer = make_fastformer(24, 4, columns, share_qv, impl, torch.float64, seed=2)
    x, mask, go = inputs(3, 16, 24, masked, torch.float64, seed=3)
    compare_with_hand(layer, chain_layer, x, mask, go, torch.float64)


def test_fastformer_compiled_layer():
    """compiled inside the layer (one compile: float64, [2, 37, 15], 3 heads, 3 columns, masked)."""
    if fb.registry.get("compiled").unsupported_reason("cpu", torch.float64):
        pytest.skip("compiled unsupported here")
    layer = make_fastformer(15, 3, 3, False, "compiled", torch.float64, seed=4)
    x, mask, go = inputs(2, 37, 15, True, torch.float64, seed=5)
    compare_with_hand(layer, chain_layer, x, mask, go, torch.float64)


def test_fastformer_padded_rows_are_bias_plus_residual():
    """The core zeroes padded rows, so there the layer gives out.bias + q exactly."""
    layer = make_fastformer(15, 3, 3, True, "eager", torch.float64, seed=6)
    x, mask, _ = inputs(2, 37, 15, True, torch.float64, seed=7)
    out = layer(x, mask)
    q = F.linear(x, layer.project.weight[:15], layer.project.bias[:15])
    pad = ~mask
    assert_close(out[pad], (q + layer.out.bias)[pad], torch.float64, "padded rows")


# -- SoftmaxAttentionLayer --------------------------------------------------------------------------------------


def softmax_layer_by_hand(layer, x, mask):
    B, N, D = x.shape
    H = layer.heads
    Dh = D // H
    qkv = F.linear(x, layer.project.weight, layer.project.bias)
    q, k, v = (t.reshape(B, N, H, Dh).transpose(1, 2) for t in qkv.split(D, dim=-1))  # [B, H, N, Dh]
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))  # padded *keys* get no weight
    o = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, N, D)
    if mask is not None:
        o = o * mask[..., None]  # padded query rows are zero (the package's contract)
    return F.linear(o, layer.out.weight, layer.out.bias)


def make_softmax_layer(width, heads, impl, dtype, seed=0):
    torch.manual_seed(seed)
    layer = fb.SoftmaxAttentionLayer(width, heads, impl=impl).to(dtype)
    with torch.no_grad():
        layer.project.bias.normal_()
        layer.out.bias.normal_()
    return layer


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "ragged"])
@pytest.mark.parametrize("shape", [(2, 37, 15, 3), (3, 16, 24, 1), (2, 8, 16, 4)], ids=["H3", "H1", "H4-Dh4"])
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_softmax_layer_by_hand(impl, shape, masked, dtype):
    B, N, D, H = shape
    layer = make_softmax_layer(D, H, impl, dtype, seed=8)
    x, mask, go = inputs(B, N, D, masked, dtype, seed=9)
    compare_with_hand(layer, softmax_layer_by_hand, x, mask, go, dtype)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "ragged"])
@pytest.mark.parametrize("impl", SOFTMAX_IMPLS)
def test_softmax_layer_matches_multihead_attention(impl, masked):
    """Same weights in torch.nn.MultiheadAttention: the real rows agree (MHA does not zero padded rows)."""
    B, N, D, H = 2, 37, 15, 3
    layer = make_softmax_layer(D, H, impl, torch.float64, seed=10)
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.project.weight)
        mha.in_proj_bias.copy_(layer.project.bias)
        mha.out_proj.weight.copy_(layer.out.weight)
        mha.out_proj.bias.copy_(layer.out.bias)
    x, mask, _ = inputs(B, N, D, masked, torch.float64, seed=11)
    with torch.no_grad():
        out = layer(x, mask)
        want, _ = mha(x, x, x, key_padding_mask=None if mask is None else ~mask, need_weights=False)
    real = torch.ones(B, N, dtype=torch.bool) if mask is None else mask
    assert_close(out[real], want[real], torch.float64, "real rows")
    if mask is not None:
        assert_close(out[~mask], layer.out.bias.expand(int((~mask).sum()), D), torch.float64, "padded rows")
