"""Roofs that count real traffic: a read roof, a write roof and the copy at its real traffic beside today's copy
roof, and each point's minimal bytes split into reads and writes."""

from __future__ import annotations

import itertools

import pytest
import torch

from fastformer_bench.measure import env
from fastformer_bench.measure.flops import minimal_bytes, minimal_bytes_split


def test_the_read_and_write_roofs_measure_a_buffer():
    assert env.read_bandwidth("cpu", nbytes=2**20, threads=1) > 0
    assert env.write_bandwidth("cpu", nbytes=2**20, threads=1) > 0


def test_the_read_and_write_buffers_exceed_the_last_level_cache(monkeypatch):
    monkeypatch.setattr(env, "cpu_caches", lambda: {"L2": 2**20, "L3": 512 * 2**20})
    assert env._traffic_bytes(None) == 4 * 512 * 2**20
    monkeypatch.setattr(env, "cpu_caches", dict)
    assert env._traffic_bytes(None) == env.TRAFFIC_MIN_BYTES


def test_the_write_roof_uses_the_stream_kernels_non_temporal_fill_where_they_build(monkeypatch):
    additive_stream = pytest.importorskip("fastformer_bench.impls.additive_stream")
    try:
        streaming = additive_stream.fill_streaming(torch.empty(64), 0.0)
    except additive_stream.BuildError as exc:
        pytest.skip(f"the stream kernels do not build here: {exc}")
    real, filled = additive_stream.fill_streaming, []

    def recording(t, value):
        filled.append(t.numel())
        return real(t, value)

    monkeypatch.setattr(additive_stream, "fill_streaming", recording)
    assert env.write_method("cpu") == (env.NON_TEMPORAL if streaming else env.PLAIN_STORES)
    filled.clear()
    assert env.write_bandwidth("cpu", nbytes=2**20, threads=1) > 0
    assert (2**18 in filled) == streaming  # the timed fills went through the streaming stores
    assert env.write_method("cuda") == env.PLAIN_STORES


@pytest.mark.parametrize("offset,n", [(0, 1003), (1, 77), (0, 5)])
def test_the_non_temporal_fill_writes_every_element_aligned_or_not(offset, n):
    additive_stream = pytest.importorskip("fastformer_bench.impls.additive_stream")
    base = torch.full((n + 8,), -1.0)
    dst = base[offset:offset + n]
    try:
        used = additive_stream.fill_streaming(dst, 3.5)
    except additive_stream.BuildError as exc:
        pytest.skip(f"the stream kernels do not build here: {exc}")
    assert torch.equal(dst, torch.full((n,), 3.5))
    assert (base[:offset] == -1).all() and (base[offset + n:] == -1).all()  # nothing past either end
    if offset:  # 4 bytes off a 64-byte aligned allocation: not 32-byte aligned, so plain stores
        assert not used
    with pytest.raises(ValueError):
        additive_stream.fill_streaming(torch.zeros(4, dtype=torch.float64), 1.0)


def test_a_roof_holds_the_read_write_and_real_traffic_copy_beside_todays_fields(monkeypatch):
    monkeypatch.setattr(env, "write_method", lambda device: env.PLAIN_STORES)
    monkeypatch.setattr(env, "copy_bandwidth", lambda device, nbytes=0, threads=None: 20.0)
    monkeypatch.setattr(env, "gemm_flops", lambda device, threads=None, dtype=torch.float32: 100.0)
    monkeypatch.setattr(env, "read_bandwidth", lambda device, nbytes=None, threads=None: 15.0)
    monkeypatch.setattr(env, "write_bandwidth", lambda device, nbytes=None, threads=None: 9.0)
    (roof,) = env.roofs([("cpu", 1)])
    # today's copy roof keeps its meaning (2 bytes per byte copied); its real traffic is 3 (read, RFO, write)
    assert roof == {"device": "cpu", "threads": 1, "copy_bytes_per_s": 20.0, "gemm_flops_per_s": 100.0,
                    "gemm_dtype": "float32", "read_bytes_per_s": 15.0, "write_bytes_per_s": 9.0,
                    "write_method": "plain", "copy_traffic_bytes_per_s": 30.0}
    # the run-level copy_bytes_per_s is today's copy, not the traffic
    assert env.machine_roofs([type("P", (), {"device": "cpu", "threads": None})()], 1)["copy_bytes_per_s"] == {
        "cpu": 20.0}


def test_a_roof_that_cannot_be_measured_is_none(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("no such device")

    monkeypatch.setattr(env, "read_bandwidth", fails)
    monkeypatch.setattr(env, "write_bandwidth", fails)
    assert env.traffic_roofs("cuda", 1, None) == {"read_bytes_per_s": None, "write_bytes_per_s": None,
                                                  "write_method": "plain", "copy_traffic_bytes_per_s": None}


@pytest.mark.parametrize("family,scope,mode", list(itertools.product(("additive", "softmax"), ("core", "layer"),
                                                                     ("fwd", "fwd_bwd"))))
def test_the_minimal_bytes_split_into_reads_and_writes(family, scope, mode):
    shape = dict(batch=2, seq_len=64, width=32, heads=4, columns=4, dtype_bytes=4)
    read, written = minimal_bytes_split(family, scope, mode, **shape)
    assert read + written == minimal_bytes(family, scope, mode, **shape)
    assert read > written > 0


def test_the_additive_core_forward_reads_its_columns_and_writes_one_output():
    B, N, D, C = 2, 64, 32, 4
    read, written = minimal_bytes_split("additive", "core", "fwd", batch=B, seq_len=N, width=D, heads=4, columns=C,
                                        dtype_bytes=4)
    assert (read, written) == ((C * B * N * D + (C - 1) * D) * 4, B * N * D * 4)


def test_a_record_holds_the_split_beside_bytes_min():
    from fastformer_bench.point import Settings, measure_point
    from fastformer_bench.problem import Problem

    problem = Problem(impl="eager", batch=1, seq_len=32, width=16, heads=2)
    record = measure_point(problem, Settings(warmup_s=0.0, min_time_s=0.01, min_samples=2, max_samples=3,
                                             count_flops=False, measure_energy=False))
    assert record["status"] == "ok", record["reason"]
    assert record["bytes_read_min"] + record["bytes_written_min"] == record["bytes_min"]
