"""The chunked float64 check (fastformer_bench/reference_chunked.py) against the whole one: the same reference
values, chunk by chunk, on odd shapes, with and without a mask, forward and backward."""

from __future__ import annotations

import pytest
import torch

from fastformer_bench import plan as planner
from fastformer_bench import point, reference_chunked
from fastformer_bench.impls.additive_naive import quadratic_additive_attention
from fastformer_bench.problem import Problem, make_inputs

# (C, B, N, H, Dh, masked, step): N never a multiple of the chunk; step 1 and a step past N as the edges
CASES = [(2, 1, 7, 1, 3, False, 3), (3, 2, 37, 3, 5, True, 8), (4, 3, 29, 2, 7, True, 1), (3, 1, 13, 1, 4, False, 64)]


def whole(x, w, mask, grad_out):
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    out = quadratic_additive_attention(x64, w64, mask)
    out.backward(grad_out.double())
    return [out.detach(), x64.grad, w64.grad]


@pytest.mark.parametrize("C,B,N,H,Dh,masked,step", CASES, ids=[f"C{c[0]}-B{c[1]}-N{c[2]}-H{c[3]}-Dh{c[4]}"
                                                               f"{'-mask' if c[5] else ''}-step{c[6]}" for c in CASES])
def test_chunked_reference_equals_the_whole_one(C, B, N, H, Dh, masked, step):
    gen = torch.Generator().manual_seed(C * 100 + N)
    x, w = torch.randn(C, B, N, H * Dh, generator=gen), torch.randn(C - 1, H, Dh, generator=gen)
    mask = None
    if masked:
        mask = torch.rand(B, N, generator=gen) > 0.3
        mask[:, 0] = True
        mask[-1, : N // 2] = False  # a row whose first chunks hold padding alone
        mask[-1, -1] = True
    grad_out = torch.randn(B, N, H * Dh, generator=gen)
    want = whole(x, w, mask, grad_out)
    # the whole reference's own values, checked in chunks: every difference at float64 rounding, every scale equal
    pairs = reference_chunked.check_core(x, w, mask, want, grad_out, step=step)
    assert len(pairs) == 3
    for (diff, scale), tensor in zip(pairs, want):
        assert scale == pytest.approx(tensor.abs().max().item(), rel=1e-12)
        assert diff <= 1e-12 * scale
    # a wrong value in one chunk of dx is found, with its size
    wrong = [t.clone() for t in want]
    wrong[1][C - 1, B - 1, N - 1, 0] += 0.5
    diff = reference_chunked.check_core(x, w, mask, wrong, grad_out, step=step)[1][0]
    assert diff == pytest.approx(0.5, rel=1e-9)
    # forward alone: one pair
    assert len(reference_chunked.check_core(x, w, mask, want[:1], step=step)) == 1


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_point_check_takes_the_chunked_reference_where_the_whole_would_not_fit(monkeypatch, mode):
    problem = Problem(impl="eager", batch=2, seq_len=33, width=12, heads=3, columns=3, dtype="float32", mode=mode,
                      masked=True)
    whole_check = point.check_correctness(problem, make_inputs(problem))
    assert (whole_check["reference_method"], whole_check["ok"]) == ("whole", True)
    monkeypatch.setattr(reference_chunked, "room_bytes", lambda device: 1000)
    chunked = point.check_correctness(problem, make_inputs(problem))
    assert chunked["reference_method"] == "chunked" and chunked["reference_impl"] == reference_chunked.NAME
    assert chunked["ok"]
    assert chunked["max_abs_err"] == pytest.approx(whole_check["max_abs_err"], rel=1e-6, abs=1e-12)


def test_point_check_falls_back_to_chunks_when_the_whole_one_runs_out_of_memory(monkeypatch):
    problem = Problem(impl="eager", batch=1, seq_len=17, width=8, heads=2, columns=3, dtype="float32",
                      mode="fwd_bwd")

    def oom(*args, **kwargs):
        raise point.ReferenceOutOfMemory(f"{point.REFERENCE_OOM} (reference): out of memory")

    monkeypatch.setattr(point, "_whole_check", oom)
    found = point.check_correctness(problem, make_inputs(problem))
    assert (found["reference_method"], found["ok"]) == ("chunked", True)


def test_plan_checks_a_million_tokens_in_chunks_on_an_h100():
    big = Problem(impl="triton", batch=1, seq_len=2**20, width=1024, heads=8, columns=3, dtype="bfloat16",
                  mode="fwd_bwd", device="cuda")
    small = Problem(impl="triton", batch=8, seq_len=512, width=1024, heads=8, columns=3, dtype="bfloat16",
                    mode="fwd_bwd", device="cuda")
    from fastformer_bench import impls

    h100 = planner.DEVICES["h100"]
    ref = impls.get(point.reference_for(big))
    assert planner.check_method(big, ref, h100) == "chunked"
    assert planner.check_method(small, impls.get(point.reference_for(small)), h100) == "whole"
    assert planner.whole_check_bytes(big, ref) > h100.memory_bytes
    assert planner.peak_bytes(big, impls.get("triton"), ref, h100, "chunked") < h100.memory_bytes


def test_the_record_names_the_reference_that_checked_it(monkeypatch):
    problem = Problem(impl="eager", batch=1, seq_len=40, width=8, heads=2, columns=3, dtype="float32",
                      mode="fwd_bwd", masked=True)
    settings = point.Settings(warmup_s=0.0, min_time_s=0.01, min_samples=1, max_samples=2, count_flops=False,
                              measure_energy=False)
    record = point.measure_point(problem, settings)
    assert (record["status"], record["reference_method"], record["reference_impl"]) == ("ok", "whole", "reference")
    monkeypatch.setattr(reference_chunked, "room_bytes", lambda device: 1000)
    record = point.measure_point(problem, settings)
    assert (record["status"], record["reference_method"]) == ("ok", "chunked")
    assert record["reference_impl"] == reference_chunked.NAME and record["max_rel_err"] <= record["tolerance"]
