"""Additive attention (docs/design.md §1): every implementation against the quadratic reference, and the reference
against the definition written out one (batch, head) at a time.

Forward outputs and the gradients of x and w (backward of a fixed random grad_out) are compared, in float64
and in the lower dtypes with tolerances by dtype, over odd shapes (N = 1, N = 37, Dh = 5 / 24, H = 1 and
several, H == Dh so a swapped head split still type-checks), C in {2, 3, 4, 6}, with and without masks.

torch.compile costs ~10 s per new shape on a two-core CPU, so ``compiled`` runs on a few fixed cases only
(COMPILED_CASES and one strided case).
"""

from __future__ import annotations

import math

import pytest
import torch
from testkit.attention_cases import low_dtype_params, make_assert_close, make_case, registered, run, shape_params
from torch.utils._python_dispatch import TorchDispatchMode

import fastformer_bench as fb
from fastformer_bench.impls import additive_compiled

#: additive implementations that do not compile: every odd shape is affordable for them
PLAIN_ADDITIVE = registered(fb.registry.ADDITIVE, compiles=False)

# -- helpers ------------------------------------------------------------------------------------------------

#: relative tolerance by dtype; the absolute tolerance is this times the largest |expected| value
TOL = {torch.float64: 1e-11, torch.float32: 3e-6, torch.bfloat16: 4e-2, torch.float16: 5e-3}


def cpu_supports(dtype: torch.dtype) -> bool:
    try:
        a = torch.ones(2, 2, dtype=dtype)
        torch.softmax(a @ a, dim=-1)
        return True
    except (RuntimeError, TypeError):
        return False


LOW_DTYPES = low_dtype_params(cpu_supports)


assert_close = make_assert_close(TOL)


def impl_fn(name: str):
    return lambda x, w, mask: fb.additive_attention(x, w, mask, impl=name)


def definition(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """docs/design.md §1 literally, one (b, h) at a time, in float64, with an explicit exp / sum softmax."""
    x, w = x.double(), w.double()
    C, B, N, D = x.shape
    H, Dh = w.shape[1], w.shape[2]
    rows = []
    for b in range(B):
        heads = []
        for h in range(H):
            cols = slice(h * Dh, (h + 1) * Dh)
            G = x[0, b, :, cols]  # [N, Dh]
            for c in range(C - 1):
                s = (G @ w[c, h]) / math.sqrt(Dh)  # [N]
                if mask is not None:
                    s = torch.where(mask[b], s, torch.full_like(s, float("-inf")))
                e = torch.exp(s - s.max())
                a = e / e.sum()
                g = (a[:, None] * G).sum(dim=0)  # [Dh], the global vector of column c
                G = x[c + 1, b, :, cols] * g
            heads.append(G)
        row = torch.cat(heads, dim=1)  # [N, D]
        if mask is not None:
            row = row * mask[b, :, None]
        rows.append(row)
    return torch.stack(rows)


COLUMNS = [2, 3, 4, 6]
MASKS = [None, "ragged", "holes"]


# -- float64 against the reference (and the reference against the definition) --------------------------------


@pytest.mark.parametrize("mask_kind", MASKS, ids=["nomask", "ragged", "holes"])
@pytest.mark.parametrize("C", COLUMNS, ids=lambda c: f"C{c}")
@pytest.mark.parametrize("shape", shape_params())
def test_reference_matches_definition(shape, C, mask_kind):
    B, N, H, Dh = shape
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind)
    out, gx, gw = run(impl_fn("reference"), x, w, mask, go)
    e_out, e_gx, e_gw = run(definition, x, w, mask, go)
    assert_close(out, e_out, torch.float64, "out")
    assert_close(gx, e_gx, torch.float64, "grad x")
    assert_close(gw, e_gw, torch.float64, "grad w")


@pytest.mark.parametrize("mask_kind", MASKS, ids=["nomask", "ragged", "holes"])
@pytest.mark.parametrize("C", COLUMNS, ids=lambda c: f"C{c}")
@pytest.mark.parametrize("shape", shape_params())
def test_eager_matches_reference_float64(shape, C, mask_kind):
    B, N, H, Dh = shape
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=1)
    out, gx, gw = run(impl_fn("eager"), x, w, mask, go)
    e_out, e_gx, e_gw = run(impl_fn("reference"), x, w, mask, go)
    assert out.dtype == torch.float64
    assert_close(out, e_out, torch.float64, "out")
    assert_close(gx, e_gx, torch.float64, "grad x")
    assert_close(gw, e_gw, torch.float64, "grad w")


# -- lower dtypes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", [None, "ragged"], ids=["nomask", "ragged"])
@pytest.mark.parametrize("C", [2, 3, 6], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("shape", shape_params(("N37-H3-Dh5", "N16-H1-Dh24")))
@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_low_precision_matches_reference(impl, dtype, shape, C, mask_kind):
    """In dtype d, an implementation matches the float64 reference run on the same (rounded) inputs."""
    B, N, H, Dh = shape
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=2)
    x, w, go = x.to(dtype), w.to(dtype), go.to(dtype)
    out, gx, gw = run(impl_fn(impl), x, w, mask, go)
    assert out.dtype == gx.dtype == gw.dtype == dtype
    e_out, e_gx, e_gw = run(impl_fn("reference"), x.double(), w.double(), mask, go.double())
    assert_close(out, e_out, dtype, "out")
    assert_close(gx, e_gx, dtype, "grad x")
    assert_close(gw, e_gw, dtype, "grad w")


# -- padding -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("C", [2, 3, 6], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_padding_is_exactly_zero_and_does_not_leak(impl, C, dtype):
    """Padded outputs are exactly 0, padded x gets exactly 0 gradient in every column, and the values at
    padded positions do not change any real output."""
    B, N, H, Dh = 3, 37, 3, 5
    x, w, mask, go = make_case(C, B, N, H, Dh, "holes", seed=3)
    assert (~mask).any() and mask.any(dim=1).all()
    x, w, go = x.to(dtype), w.to(dtype), go.to(dtype)
    out, gx, gw = run(impl_fn(impl), x, w, mask, go)
    pad = ~mask
    assert torch.equal(out[pad], torch.zeros_like(out[pad])), "padded outputs must be exactly zero"
    for c in range(C):
        assert torch.equal(gx[c][pad], torch.zeros_like(gx[c][pad])), f"column {c}: gradient at padded tokens"
    assert gx[:, mask].abs().sum() > 0 and gw.abs().sum() > 0  # the real positions do get gradient

    # garbage at padded positions changes nothing
    noisy = x.clone()
    noisy[:, pad] = 100 * torch.randn_like(noisy[:, pad])
    out2, gx2, gw2 = run(impl_fn(impl), noisy, w, mask, go)
    assert_close(out2, out, dtype, "out with noisy padding")
    assert_close(gx2, gx, dtype, "grad x with noisy padding")
    assert_close(gw2, gw, dtype, "grad w with noisy padding")


def test_reference_padding_gradient_is_zero_by_finite_differences():
    """The zero gradient at padded positions is the truth, not an artefact: the reference's output does not
    move at all when a padded x entry moves."""
    x, w, mask, _ = make_case(3, 2, 9, 2, 3, "ragged", seed=4)
    b, n = torch.nonzero(~mask)[0].tolist()
    base = fb.additive_attention(x, w, mask, impl="reference")
    for c in range(3):
        moved = x.clone()
        moved[c, b, n] += 1.0
        assert torch.equal(fb.additive_attention(moved, w, mask, impl="reference"), base)


def test_mask_of_all_true_equals_no_mask():
    x, w, _, _ = make_case(3, 2, 11, 2, 5, seed=5)
    full = torch.ones(2, 11, dtype=torch.bool)
    for impl in ("reference", "eager"):
        assert_close(fb.additive_attention(x, w, full, impl=impl), fb.additive_attention(x, w, None, impl=impl),
                     torch.float64, impl)


# -- strided inputs --------------------------------------------------------------------------------------------


def strided_case(C, B, N, H, Dh, mask_kind, seed=6):
    """x as a permuted view of a [B, N, C*D] tensor (as a fused projection gives it), w transposed."""
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=seed)
    base = x.permute(1, 2, 0, 3).reshape(B, N, C * H * Dh).clone()  # [B, N, C*D], contiguous
    w_base = w.transpose(1, 2).contiguous()  # [C-1, Dh, H]
    return x, w, base, w_base, mask, go


def run_strided(fn, base, w_base, C, mask, go, stride_w=True):
    base = base.detach().clone().requires_grad_(True)
    w_base = w_base.detach().clone().requires_grad_(True)
    B, N, CD = base.shape
    x = base.view(B, N, C, CD // C).permute(2, 0, 1, 3)
    w = w_base.transpose(1, 2)
    assert not x.is_contiguous() and not w.is_contiguous()
    if not stride_w:
        w = w.contiguous()
    out = fn(x, w, mask)
    gbase, gw = torch.autograd.grad(out, (base, w_base), go)
    return out.detach(), gbase.view(B, N, C, CD // C).permute(2, 0, 1, 3), gw.transpose(1, 2)


#: the linear-time ones among them: the only ones that reach N = 98304
LINEAR_ADDITIVE = [p for p in PLAIN_ADDITIVE if not fb.registry.get(p.values[0]).quadratic]


@pytest.mark.parametrize("impl", LINEAR_ADDITIVE)
def test_float32_stays_within_the_harness_tolerance_at_long_sequences(impl):
    """The harness's own check at N = 98304 (where the cpu study found eager 1.8e-4 off float64 against the 1e-4
    float32 tolerance: torch's softmax over a non-last dim sums N terms one after another). Narrow width, so
    the float64 reference stays small; the error comes from the length of the sums, not the width."""
    from fastformer_bench.point import check_correctness
    from fastformer_bench.problem import Problem, make_inputs

    problem = Problem(impl=impl, batch=1, seq_len=98304, width=128, heads=2, columns=3, dtype="float32")
    found = check_correctness(problem, make_inputs(problem))
    assert found["ok"], f"{impl}: max relative error {found['max_rel_err']:.3g} > {found['tolerance']:g}"


@pytest.mark.parametrize("mask_kind", [None, "ragged"], ids=["nomask", "ragged"])
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_strided_inputs(impl, mask_kind):
    C, B, N, H, Dh = 4, 2, 37, 4, 24
    x, w, base, w_base, mask, go = strided_case(C, B, N, H, Dh, mask_kind)
    out, gx, gw = run_strided(impl_fn(impl), base, w_base, C, mask, go)
    e_out, e_gx, e_gw = run(impl_fn("reference"), x, w, mask, go)
    assert_close(out, e_out, torch.float64, "out")
    assert_close(gx, e_gx, torch.float64, "grad x")
    assert_close(gw, e_gw, torch.float64, "grad w")


# -- gradcheck -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", [None, "ragged"], ids=["nomask", "ragged"])
@pytest.mark.parametrize("C", [2, 4], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("impl", PLAIN_ADDITIVE)
def test_gradcheck(impl, C, mask_kind):
    x, w, mask, _ = make_case(C, 2, 4, 2, 3, mask_kind, seed=7)
    if mask is not None:
        assert (~mask).any()
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: fb.additive_attention(x, w, mask, impl=impl), (x, w))


# -- GPU-sane shapes ------------------------------------------------------------------------------------------


class MatmulShapes(TorchDispatchMode):
    """Records the batch count and matrix sizes of every matrix product issued under it."""

    OPS = {"mm": 0, "bmm": 0, "addmm": 1, "baddbmm": 1}  # where the two matrices start among the arguments

    def __init__(self) -> None:
        super().__init__()
        self.products: list[tuple[str, int, tuple[int, int, int]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.OPS:
            a, b = args[self.OPS[name]], args[self.OPS[name] + 1]
            batch = a.shape[0] if a.dim() == 3 else 1
            self.products.append((name, batch, (a.shape[-2], a.shape[-1], b.shape[-1])))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd_bwd"])
def test_eager_issues_no_matrix_product_per_token(backward):
    """eager's matrix products are batched over at most (batch, head), never over tokens: B·N·H products of size
    1 × Dh × 1 (a matrix-vector product per token and head) run far below the memory bandwidth on a GPU."""
    found = {}
    for N in (16, 64):
        x, w, _, go = make_case(3, 2, N, 4, 8, None, seed=14)
        x.requires_grad_(backward)
        w.requires_grad_(backward)
        with MatmulShapes() as shapes:
            out = fb.additive_attention(x, w, impl="eager")
            if backward:
                torch.autograd.grad(out, (x, w), go)
        assert shapes.products, "eager pools with a matrix product"
        found[N] = shapes.products
        assert all(batch <= 2 * 4 for _, batch, _ in shapes.products), shapes.products
    assert [batch for _, batch, _ in found[16]] == [batch for _, batch, _ in found[64]], "batches grow with N"


# -- compiled --------------------------------------------------------------------------------------------------
# Four compiled cases only (each new shape / dtype / stride pattern is a ~10 s compile). The caching test reuses
# the float64 case's shape; the strided case has FastformerLayer's column layout (a permuted [B, N, C*D] view).

COMPILED_CASES = {
    # id: (dtype, C, B, N, H, Dh, mask_kind)
    "f64-C3-N37-H3-Dh5-ragged": (torch.float64, 3, 2, 37, 3, 5, "ragged"),
    "f32-C4-N16-H2-Dh24": (torch.float32, 4, 2, 16, 2, 24, None),
    "bf16-C6-N8-H4-Dh4-holes": (torch.bfloat16, 6, 2, 8, 4, 4, "holes"),
}


@pytest.mark.parametrize("case", [pytest.param(v, id=k) for k, v in COMPILED_CASES.items()])
def test_compiled_matches_reference(case):
    dtype, C, B, N, H, Dh, mask_kind = case
    if not cpu_supports(dtype):
        pytest.skip(f"{dtype} not supported on CPU")
    reason = fb.registry.get("compiled").unsupported_reason("cpu", dtype)
    if reason is not None:
        pytest.skip(reason)
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=8)
    x, w, go = x.to(dtype), w.to(dtype), go.to(dtype)
    out, gx, gw = run(impl_fn("compiled"), x, w, mask, go)
    assert out.dtype == dtype
    e_out, e_gx, e_gw = run(impl_fn("reference"), x.double(), w.double(), mask, go.double())
    assert_close(out, e_out, dtype, "out")
    assert_close(gx, e_gx, dtype, "grad x")
    assert_close(gw, e_gw, dtype, "grad w")
    if mask is not None:
        pad = ~mask
        assert torch.equal(out[pad], torch.zeros_like(out[pad]))
        assert torch.equal(gx[:, pad], torch.zeros_like(gx[:, pad]))


def test_compiled_strided_inputs():
    C, B, N, H, Dh = 3, 2, 37, 3, 5
    x, w, base, w_base, mask, go = strided_case(C, B, N, H, Dh, "ragged")
    # x strided exactly as FastformerLayer.columns_of gives it; w contiguous, as the layer passes it
    out, gx, gw = run_strided(impl_fn("compiled"), base, w_base, C, mask, go, stride_w=False)
    e_out, e_gx, e_gw = run(impl_fn("reference"), x, w, mask, go)
    assert_close(out, e_out, torch.float64, "out")
    assert_close(gx, e_gx, torch.float64, "grad x")
    assert_close(gw, e_gw, torch.float64, "grad w")


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_caches_per_shape():
    """A second call at the same shape reuses the compiled graph: no new graph is captured."""
    dtype, C, B, N, H, Dh, mask_kind = COMPILED_CASES["f64-C3-N37-H3-Dh5-ragged"]
    x, w, mask, go = make_case(C, B, N, H, Dh, mask_kind, seed=9)
    run(impl_fn("compiled"), x, w, mask, go)  # compiles, or hits the cache of an earlier test
    after_first = _graph_count()
    assert after_first >= 1
    x2, w2, _, go2 = make_case(C, B, N, H, Dh, None, seed=10)  # new values, same shape, dtype and mask presence
    out, gx, gw = run(impl_fn("compiled"), x2, w2, mask, go2)
    assert _graph_count() == after_first, "the second call at the same shape recompiled"
    assert_close(out, fb.additive_attention(x2, w2, mask, impl="reference"), torch.float64, "second call")


@pytest.fixture
def fresh_compiled(monkeypatch):
    """Make the compiled implementation compile a replacement core (restored afterwards)."""

    def install(core):
        monkeypatch.setattr(additive_compiled, "_compiled", None)
        monkeypatch.setattr(additive_compiled, "additive_attention_core", core)

    return install


def test_compiled_graph_break_raises(fresh_compiled):
    def core_with_graph_break(x, w, mask):
        y = x[0] * 2
        torch._dynamo.graph_break()
        return y + 1

    fresh_compiled(core_with_graph_break)
    x, w, _, _ = make_case(2, 1, 3, 1, 2, seed=11)
    with pytest.raises(additive_compiled.CompileFallbackError, match="fell back to eager"):
        fb.additive_attention(x, w, impl="compiled")


def test_compiled_recompile_limit_raises(fresh_compiled):
    def core_cheap(x, w, mask):
        return x[0] * 2

    fresh_compiled(core_cheap)
    x, w, _, _ = make_case(2, 1, 3, 1, 2, seed=12)
    assert torch.equal(fb.additive_attention(x, w, impl="compiled"), x[0] * 2)  # compiles, configures dynamo
    import torch._dynamo.config as dynamo_config

    assert dynamo_config.fail_on_recompile_limit_hit
    x2, w2, _, _ = make_case(2, 1, 5, 1, 2, seed=13)  # a new shape needs a recompile: over the limit
    # config.patch, not monkeypatch.setattr: pytest's undo would delattr (hide) a config-module entry
    with dynamo_config.patch(recompile_limit=1):
        with pytest.raises(additive_compiled.CompileFallbackError, match="fell back to eager"):
            fb.additive_attention(x2, w2, impl="compiled")
