"""measure.energy with a fake GPU and a fake NVML: joules per call over >= 1 s of the very calls that were timed,
the cold cache's flushes taken out, and a result above the board's enforced power limit refused, not stored."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from testkit.fake_gpu import FakeBoard, FakeGpu, fake_pynvml

from fastformer_bench.measure import Subject, energy, nvml
from fastformer_bench.measure.cuda_timing import build_sampler
from fastformer_bench.measure.energy import MIN_WINDOW_S, energy_window


def _sampler(gpu: FakeGpu, method: str = "graph", cache: str = "warm", per_call_s: float | None = None):
    sampler = build_sampler(gpu, gpu.step, method, cache, 2e-3)
    sampler.per_call_s = per_call_s
    return sampler


@pytest.mark.parametrize("method", ["graph", "launch"])
def test_energy_per_call_comes_from_at_least_a_second_of_the_timed_calls(method):
    gpu = FakeGpu(call_s=1e-4, call_w=300.0)
    sampler = _sampler(gpu, method, per_call_s=1e-4)
    replays, steps = gpu.log.count("replay"), gpu.log.count("step")
    found = energy_window(sampler, FakeBoard(gpu, limit_w=700.0))
    assert found["energy_j"] == pytest.approx(300.0 * 1e-4) and found["energy_reason"] is None
    assert found["energy_power_w"] == pytest.approx(300.0) and found["power_limit_w"] == 700.0
    assert found["energy_window_s"] >= MIN_WINDOW_S
    if method == "graph":  # the window replays the timed graph: no call from Python
        assert gpu.log.count("step") == steps and gpu.log.count("replay") > replays
    else:
        assert gpu.log.count("step") - steps == pytest.approx(MIN_WINDOW_S / 1e-4, rel=0.05)


def test_a_cold_windows_flushes_are_taken_out_of_the_calls_energy():
    gpu = FakeGpu(call_s=1e-4, flush_s=4e-5, call_w=300.0, flush_w=500.0)
    found = energy_window(_sampler(gpu, "graph", "cold", per_call_s=1e-4), FakeBoard(gpu))
    assert found["energy_j"] == pytest.approx(300.0 * 1e-4) and found["energy_power_w"] == pytest.approx(300.0)


def test_a_launch_bound_windows_idle_gaps_lower_its_power_not_the_energy_per_call():
    gpu = FakeGpu(call_s=1e-5, launch_s=3e-5, call_w=300.0)
    found = energy_window(_sampler(gpu, "launch", per_call_s=4e-5), FakeBoard(gpu))
    assert found["energy_j"] == pytest.approx(300.0 * 1e-5)
    assert found["energy_power_w"] == pytest.approx(300.0 * 1e-5 / 4e-5)


def test_energy_above_the_enforced_power_limit_is_refused_with_a_reason():
    gpu = FakeGpu(call_s=1e-4, call_w=746.0)
    found = energy_window(_sampler(gpu, per_call_s=1e-4), FakeBoard(gpu, limit_w=700.0))
    assert found["energy_j"] is None and found["energy_power_w"] is None
    assert found["energy_reason"] == ("0.0746 J per call implies 746 W over its window, above the board's "
                                      "enforced power limit of 700 W: not stored")
    assert found["power_limit_w"] == 700.0 and found["energy_window_s"] >= MIN_WINDOW_S


def test_energy_that_the_timed_median_makes_impossible_is_refused():
    # The committed H200 run's 746 W: energy and time from different calls. Here the time is half the window's.
    gpu = FakeGpu(call_s=1e-4, call_w=400.0)
    found = energy_window(_sampler(gpu, per_call_s=0.5e-4), FakeBoard(gpu, limit_w=700.0))
    assert found["energy_j"] is None and "800 W against the timed median" in found["energy_reason"]


def test_no_limit_known_stores_the_energy_and_an_unreadable_counter_says_so():
    gpu = FakeGpu(call_s=1e-4, call_w=900.0)
    assert energy_window(_sampler(gpu), FakeBoard(gpu, limit_w=None))["energy_j"] == pytest.approx(0.09)
    found = energy_window(_sampler(gpu), FakeBoard(gpu, broken=True))
    assert found["energy_j"] is None and "energy counter cannot be read" in found["energy_reason"]
    assert "NVML_ERROR_NOT_SUPPORTED" in found["energy_reason"]


def _subject(sampler, device: str = "cuda", measure_energy: bool = True) -> Subject:
    return Subject(problem=SimpleNamespace(device=device), impl=None, inputs=None, step=lambda: None,
                   settings=SimpleNamespace(measure_energy=measure_energy), sampler=sampler)


def test_the_meter_reads_nvml_through_pynvml_and_closes_the_sampler(monkeypatch):
    gpu = FakeGpu(call_s=1e-4, call_w=250.0)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, limit_w=700.0))
    subject = _subject(_sampler(gpu, per_call_s=1e-4))
    sampler = subject.sampler
    found = energy.METER.measure(subject)
    assert set(found) == set(energy.METER.fields)
    assert found["energy_j"] == pytest.approx(0.025) and found["power_limit_w"] == pytest.approx(700.0)
    assert subject.sampler is None
    with pytest.raises(RuntimeError, match="closed"):
        sampler.measure()


def test_the_meter_says_why_there_is_no_energy(monkeypatch):
    assert energy.METER.measure(_subject(None))["energy_reason"].startswith("no CUDA-timed calls")
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    found = energy.METER.measure(_subject(_sampler(gpu)))
    assert found["energy_j"] is None and "NVML is not available" in found["energy_reason"]
    assert not energy.METER.applies(_subject(None, device="cpu"))
    assert not energy.METER.applies(_subject(None, measure_energy=False))


def test_the_board_reads_joules_and_watts_from_nvmls_milli_units(monkeypatch):
    gpu = FakeGpu()
    gpu.energy = 12.5
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, limit_w=700.0))
    with nvml.board(0) as board:
        assert board.energy_j() == pytest.approx(12.5) and board.power_limit_w() == pytest.approx(700.0)
