"""A point's inputs are drawn once: on a CPU exactly as before (float64 on a CPU generator, then cast: the committed
CPU results stay reproducible), on CUDA on the device in the point's dtype; the float64 check upcasts the point's own
values instead of drawing them again, and the record says how the inputs were made (``input_draw``)."""

from __future__ import annotations

import math

import pytest
import torch

from fastformer_bench import point, problem
from fastformer_bench.layers import FastformerLayer, SoftmaxAttentionLayer
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Inputs, Problem, input_draw, make_inputs


def _inputs_before(p: Problem) -> Inputs:
    """make_inputs as it was before CUDA points drew on the device (code d2d8bc3), for a CPU point."""
    dtype, device, impl = p.torch_dtype, "cpu", p.impl
    gen = torch.Generator().manual_seed(p.seed)
    B, N, D, H, C = p.batch, p.seq_len, p.width, p.heads, p.columns
    mask = problem.ragged_mask(B, N, gen).to(device) if p.masked else None
    layer = w = None
    if p.scope == "core":
        x = torch.randn(C, B, N, D, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        w = (torch.randn(C - 1, H, D // H, generator=gen, dtype=torch.float64) / math.sqrt(D // H)).to(
            device=device, dtype=dtype)
    else:
        layer_cls = FastformerLayer if p.family == "additive" else SoftmaxAttentionLayer
        kwargs = {"columns": C} if layer_cls is FastformerLayer else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            layer = layer_cls(D, H, impl=impl, **kwargs).to(dtype=torch.float64)
        layer = layer.to(device=device, dtype=dtype)
        x = torch.randn(B, N, D, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    grad_out = None
    if p.mode == "fwd_bwd":
        grad_out = torch.randn(B, N, D, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return Inputs(x=x, w=w, mask=mask, layer=layer, grad_out=grad_out)


def _same_bytes(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.detach().view(-1).view(torch.uint8),
                                                                     b.detach().view(-1).view(torch.uint8))


CASES = [dict(impl=impl, scope=scope, mode=mode, dtype=dtype, masked=masked, seed=seed)
         for impl, scope in (("eager", "core"), ("eager", "layer"), ("softmax_naive", "core"),
                             ("softmax_sdpa", "layer"))
         for mode in ("fwd", "fwd_bwd") for dtype in ("float32", "bfloat16", "float64")
         for masked, seed in ((False, 0), (True, 3))]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_cpu_inputs_are_byte_identical_to_the_draws_before(case):
    p = Problem(batch=2, seq_len=12, width=8, heads=2, device="cpu", **case)
    now, before = make_inputs(p), _inputs_before(p)
    assert now.draw == "cpu-float64"
    for name in ("x", "w", "mask", "grad_out"):
        assert _same_bytes(getattr(now, name), getattr(before, name)), name
    if p.scope == "layer":
        for a, b in zip(now.layer.state_dict().values(), before.layer.state_dict().values(), strict=True):
            assert _same_bytes(a, b)


def test_the_draw_is_named_by_device_and_dtype():
    assert input_draw("cpu", torch.bfloat16) == "cpu-float64"
    assert input_draw("cuda", torch.bfloat16) == "cuda-bfloat16"
    assert input_draw("cuda:0", torch.float32) == "cuda-float32"


@pytest.mark.parametrize("scope, mode", [("core", "fwd"), ("core", "fwd_bwd"), ("layer", "fwd_bwd")])
def test_the_check_upcasts_the_points_own_inputs_instead_of_drawing_again(monkeypatch, scope, mode):
    p = Problem(impl="eager", batch=2, seq_len=16, width=8, heads=2, device="cpu", dtype="bfloat16", scope=scope,
                mode=mode, masked=True)
    inputs = make_inputs(p)
    # inputs that no seed gives: the check must see exactly these values
    with torch.no_grad():
        inputs.x.add_(0.25)
    drawn = []
    monkeypatch.setattr(point, "make_inputs", lambda *a, **k: drawn.append(a) or make_inputs(*a, **k))
    ref = point._reference_inputs(p, inputs, point.reference_for(p))
    assert not drawn
    assert ref.x.dtype == torch.float64 and torch.equal(ref.x, inputs.x.detach().double())
    assert ref.mask is inputs.mask and ref.x.requires_grad == (mode == "fwd_bwd")
    assert ref.x.data_ptr() != inputs.x.data_ptr()
    if scope == "core":
        assert torch.equal(ref.w, inputs.w.detach().double()) and ref.leaves == [ref.x, ref.w]
    else:
        for a, b in zip(ref.layer.parameters(), inputs.layer.parameters(), strict=True):
            assert a.dtype == torch.float64 and torch.equal(a, b.detach().double()) and a is not b
        assert ref.leaves[1:] == list(ref.layer.parameters())
    if mode == "fwd_bwd":
        assert torch.equal(ref.grad_out, inputs.grad_out.double())
    accuracy = point.check_correctness(p, inputs)
    assert accuracy["ok"] and not drawn


def test_a_cpu_record_says_its_inputs_were_drawn_in_float64():
    settings = Settings(warmup_s=0.0, min_time_s=0.01, min_samples=3, max_samples=5, count_flops=False,
                        measure_energy=False, threads=1)
    record = measure_point(Problem(impl="eager", batch=1, seq_len=16, width=8, heads=2, device="cpu"), settings)
    assert record["status"] == "ok" and record["input_draw"] == "cpu-float64"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_are_drawn_on_the_device_deterministically_per_seed():
    p = Problem(impl="triton", batch=2, seq_len=64, width=64, heads=2, device="cuda", dtype="bfloat16",
                mode="fwd_bwd")
    a, b, c = make_inputs(p), make_inputs(p), make_inputs(p.with_(seed=1))
    assert a.draw == "cuda-bfloat16" and a.x.device.type == "cuda" and a.x.dtype == torch.bfloat16
    assert torch.equal(a.x, b.x) and torch.equal(a.grad_out, b.grad_out) and not torch.equal(a.x, c.x)
    assert 0.9 < a.x.float().std().item() < 1.1
