"""CUDA points end to end on a fake GPU (measure_point with its device calls faked): the timing method and cache in
every record, a step that cannot be captured stored ``unsupported``, a spread that stays above max_spread stored
``noisy`` (CPU points unchanged), energy from the timed calls, and the method axes in presets and the gate."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings

import pytest
import torch
from testkit.fake_gpu import FakeGpu, fake_pynvml

from fastformer_bench import measure, point, presets, problem
from fastformer_bench.gate import compare
from fastformer_bench.measure import timing
from fastformer_bench.point import Settings, measure_point
from fastformer_bench.problem import Problem
from fastformer_bench.results import STATUSES, new_record

FAST = Settings(warmup_s=0.0, min_time_s=0.01, min_samples=5, max_samples=8, time_limit_s=60, count_flops=False)


def tiny(**changes) -> Problem:
    return Problem(**{"impl": "eager", "batch": 1, "seq_len": 16, "width": 8, "heads": 2, "device": "cuda",
                      **changes})


@pytest.fixture
def fake_cuda(monkeypatch):
    """measure_point runs a CUDA point on this CPU: its inputs here, its calls also launched on a FakeGpu."""
    gpu = FakeGpu(call_s=1e-3)  # long calls: an energy window of launched calls runs the real step 1000 times
    real_inputs, real_step = problem.make_inputs, problem.make_step
    monkeypatch.setattr(point, "preflight", lambda p: None)
    monkeypatch.setattr(point, "make_inputs", lambda p: real_inputs(p, device="cpu"))
    monkeypatch.setattr(point, "make_step", lambda p, inputs: gpu.wrap(real_step(p, inputs)))
    monkeypatch.setattr(point, "check_correctness", lambda p, inputs: {
        "max_abs_err": 0.0, "max_rel_err": 0.0, "tolerance": 1e-4, "reference_impl": "reference", "ok": True})
    monkeypatch.setattr(measure, "active", lambda: [measure.get("time"), measure.get("energy")])
    monkeypatch.setattr(timing, "GPU", lambda device: gpu)
    monkeypatch.setattr(timing, "gpu_clock_state", lambda: {})
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, limit_w=700.0))
    return gpu


@pytest.mark.parametrize("timing_axis, cache", [("graph", "warm"), ("graph", "cold"), ("launch", "warm"),
                                                ("launch", "cold")])
def test_a_cuda_point_records_how_it_was_timed(fake_cuda, timing_axis, cache):
    record = measure_point(tiny(timing=timing_axis, cache=cache), FAST)
    assert record["status"] == "ok", record["reason"]
    assert record["timing_method"] == record["timing"] == timing_axis and record["cache"] == cache
    assert record["calls_per_sample"] == 2 and record["time_median"] == pytest.approx(1e-3)
    assert (len(fake_cuda.graphs) > 0) == (timing_axis == "graph")
    # energy over the same calls: the fake's 300 W for 1 ms a call
    assert record["energy_j"] == pytest.approx(0.3) and record["energy_reason"] is None
    assert record["energy_window_s"] >= 1.0 and "energy_j" in record["quantities"]


def test_a_cuda_point_that_names_no_method_takes_the_defaults_and_keeps_its_point_id(fake_cuda):
    plain = tiny()
    assert "timing" not in plain.params() and "cache" not in plain.params()
    blob = json.dumps({k: v for k, v in plain.params().items()}, sort_keys=True).encode()
    assert plain.point_id == hashlib.sha256(blob).hexdigest()[:16]
    record = measure_point(plain, FAST)
    assert (record["timing"], record["cache"], record["timing_method"]) == ("graph", "cold", "graph")
    assert tiny(timing="graph").point_id != plain.point_id  # naming the axis is another point


def test_a_step_that_cannot_be_captured_is_stored_unsupported_naming_the_method(fake_cuda):
    fake_cuda.capture_error = RuntimeError("operation not permitted when stream is capturing")
    record = measure_point(tiny(timing="graph", cache="warm"), FAST)
    assert record["status"] == "unsupported" and record["timing_method"] == "graph"
    assert record["reason"].startswith("cannot be timed by the graph method: its CUDA graph capture failed")
    assert "operation not permitted" in record["reason"] and record["time_median"] is None
    assert record["energy_j"] is None


def test_a_cuda_point_whose_spread_stays_above_the_limit_is_stored_noisy(fake_cuda):
    fake_cuda.sample_factors = (1.0, 1.0, 1.5, 1.0, 2.0)
    noisy = Settings(**{**FAST.__dict__, "max_spread": 0.05, "max_attempts": 2})
    record = measure_point(tiny(timing="launch", cache="warm"), noisy)
    assert "noisy" in STATUSES and record["status"] == "noisy"
    assert record["reason"].startswith("p20-p80 spread ") and "above the 5% limit after 2 windows" in record["reason"]
    assert "(launch timing)" in record["reason"]
    assert record["samples"] and record["rejected_samples"] and record["time_median"] > 0  # kept, not hidden
    # without a limit, the same spread is what the point is
    assert measure_point(tiny(timing="launch", cache="warm"), FAST)["status"] == "ok"


def test_a_cpu_points_spread_above_the_limit_leaves_it_ok(monkeypatch):
    def window(step, calls, warmup_calls, *args):
        samples = [1e-3, 1.5e-3, 1e-3, 2e-3, 1e-3]
        return timing._summarise(samples, calls, warmup_calls, "perf_counter")

    monkeypatch.setattr(timing, "_time_cpu", window)
    settings = Settings(**{**FAST.__dict__, "max_spread": 0.05, "max_attempts": 2, "threads": 1})
    record = measure_point(tiny(device="cpu"), settings)
    assert record["status"] == "ok" and record["timing_method"] == "perf_counter"
    assert record["timing"] is None and record["cache"] is None


def test_the_method_axes_apply_to_cuda_points_only():
    reason = tiny(device="cpu", timing="graph").skip_reason()
    assert reason == "the timing axis applies to CUDA points only (a CPU point is timed by the wall clock)"
    assert "timing and cache axes" in tiny(device="cpu", timing="launch", cache="warm").skip_reason()
    assert tiny(timing="launch").skip_reason() is None
    with pytest.raises(ValueError, match="unknown timing 'fast'; known: graph, launch"):
        tiny(timing="fast")
    with pytest.raises(ValueError, match="unknown cache 'hot'; known: warm, cold"):
        tiny(cache="hot")


def test_a_preset_can_sweep_both_methods_in_one_run(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text('name = "both"\n[settings]\nmin_time_s = 0.1\n[[grid]]\nimpl = ["eager"]\n'
                    'device = ["cuda", "cpu"]\nseq_len = [64]\nwidth = [64]\n'
                    'timing = ["graph", "launch"]\ncache = ["warm", "cold"]\n')
    problems, skipped = presets.expand(presets.load(str(path)))
    assert sorted((p.timing, p.cache) for p in problems) == [("graph", "cold"), ("graph", "warm"),
                                                            ("launch", "cold"), ("launch", "warm")]
    assert {p.device for p in problems} == {"cuda"} and len({p.point_id for p in problems}) == 4
    assert len(skipped) == 4 and all("CUDA points only" in reason for _, reason in skipped)
    overridden, _ = presets.expand(presets.load(str(path)), {"timing": ["launch"], "cache": ["warm"]})
    assert [(p.device, p.timing, p.cache) for p in overridden] == [("cuda", "launch", "warm")]


def test_the_gate_reports_a_noisy_candidate_without_passing_or_failing_it():
    key = {"impl": "eager", "device": "cuda", "dtype": "bfloat16", "mode": "fwd", "scope": "core", "batch": 1,
           "seq_len": 1024, "width": 64, "heads": 2, "columns": 3, "masked": False, "seed": 0}
    base = new_record(**key, status="ok", samples=[1.0] * 10, point_id="p")
    cand = new_record(**key, status="noisy", reason="p20-p80 spread 9% above the 5% limit", samples=[1.0] * 10,
                      point_id="p")
    rows = compare.compare(compare.pool([[base]]), compare.pool([[cand]]))
    assert [r.verdict for r in rows] == [compare.NOT_COMPARED] and "noisy" in rows[0].note


@pytest.fixture
def fake_sdpa(monkeypatch):
    """softmax_sdpa's CUDA path on this CPU: an SDPA whose FlashAttention kernel takes bfloat16 and float16 without a
    mask only (raising as torch does, after its warnings), and whose other kernels take anything."""
    from torch.nn.attention import SDPBackend

    from fastformer_bench.impls import softmax

    ran: list[str] = []
    flags = {"flash_attention": torch.backends.cuda.flash_sdp_enabled,
             "efficient_attention": torch.backends.cuda.mem_efficient_sdp_enabled,
             "math": torch.backends.cuda.math_sdp_enabled}
    real = torch.nn.functional.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None):
        enabled = [name for name, on in flags.items() if on()]
        assert len(enabled) == 1, enabled  # sdpa_kernel chose one
        if enabled == ["flash_attention"] and (q.dtype == torch.float32 or attn_mask is not None):
            warnings.warn("Flash attention kernel not used because: ...", UserWarning, stacklevel=2)
            raise RuntimeError("No available kernel. Aborting execution.")
        ran.append(enabled[0])
        with torch.nn.attention.sdpa_kernel([SDPBackend.MATH]):
            return real(q, k, v, attn_mask=attn_mask)

    monkeypatch.setattr(softmax, "_on_cuda", lambda t: True)
    monkeypatch.setattr(softmax.F, "scaled_dot_product_attention", sdpa)
    monkeypatch.setattr(softmax, "_sdpa_chosen", {})
    return ran


@pytest.mark.parametrize("dtype, masked, backend", [("bfloat16", False, "flash_attention"),
                                                    ("float32", False, "efficient_attention"),
                                                    ("bfloat16", True, "efficient_attention")])
def test_a_cuda_sdpa_point_runs_flash_attention_first_and_records_the_kernel(fake_cuda, fake_sdpa, dtype, masked,
                                                                              backend):
    record = measure_point(tiny(impl="softmax_sdpa", dtype=dtype, masked=masked, mode="fwd_bwd", timing="graph",
                                cache="warm"), FAST)
    assert record["status"] == "ok", record["reason"]
    assert record["sdpa_backend"] == backend and set(fake_sdpa) == {backend}
    assert record["input_draw"] == "cpu-float64"  # the fixture draws this CUDA point's inputs on the CPU


def test_a_cpu_sdpa_point_lets_torch_choose_and_records_no_backend():
    settings = Settings(**{**FAST.__dict__, "threads": 1, "measure_energy": False})
    record = measure_point(tiny(impl="softmax_sdpa", device="cpu"), settings)
    assert record["status"] == "ok" and record.get("sdpa_backend") is None
