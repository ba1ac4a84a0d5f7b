"""measure.memory: the reported peak matches allocations of known size, held or freed along the way."""

import os

import pytest
import torch

from fastformer_bench.measure import memory
from fastformer_bench.measure.memory import peak_memory
from fastformer_bench.problem import Problem, make_inputs, make_step

MiB = 2**20
FLOATS_16MIB = 16 * MiB // 4


def test_returned_tensor_counts():
    peak, method = peak_memory(lambda: torch.empty(64 * MiB, dtype=torch.uint8), "cpu")
    assert method == "torch_profiler_memory"
    assert peak == pytest.approx(64 * MiB, rel=0.02)


def test_intermediates_held_at_once_add_up():
    def step():
        a = torch.ones(FLOATS_16MIB)
        b = a * 2
        c = b + 1
        return (a[0] + b[0] + c[0]).item()  # three 16 MiB tensors live together, nothing big returned

    peak, _ = peak_memory(step, "cpu")
    assert peak == pytest.approx(48 * MiB, rel=0.03)


def test_intermediates_freed_in_turn_do_not_add_up():
    def step():
        for _ in range(3):
            t = torch.ones(FLOATS_16MIB)
            del t  # freed before the next one: the running peak stays at one tensor
        return None

    peak, _ = peak_memory(step, "cpu")
    assert peak == pytest.approx(16 * MiB, rel=0.03)


def test_memory_allocated_before_the_call_is_not_counted():
    held = torch.ones(8 * FLOATS_16MIB)
    peak, _ = peak_memory(lambda: held[:10], "cpu")  # a view: no new storage
    assert peak < MiB


def test_eager_forward_peak_is_a_few_outputs():
    p = Problem(impl="eager", batch=2, seq_len=512, width=128, heads=4)
    step = make_step(p, make_inputs(p))
    out_bytes = p.batch * p.seq_len * p.width * 4
    peak, _ = peak_memory(step, "cpu")
    # the output plus the previous column's product live at once; small score vectors on top
    assert out_bytes <= peak <= 3 * out_bytes


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_stream_peak_counts_its_cached_buffers(mode):
    """The stream kernels' outputs come from impls/buffer_cache.py, which torch's profiler does not see; the peak
    still counts them: the output in fwd, the output and the C-column dx in fwd_bwd."""
    from fastformer_bench.impls import buffer_cache
    from fastformer_bench.impls.additive_stream import STREAM

    if STREAM.unsupported_reason("cpu", torch.float32) is not None:
        pytest.skip(str(STREAM.unsupported_reason("cpu", torch.float32)))
    p = Problem(impl="stream", batch=1, seq_len=8192, width=256, heads=4, mode=mode)
    out_bytes = p.batch * p.seq_len * p.width * 4
    assert out_bytes >= buffer_cache.MIN_BYTES
    used = buffer_cache.stats()
    peak, method = peak_memory(make_step(p, make_inputs(p)), "cpu")
    after = buffer_cache.stats()
    assert after["hits"] + after["misses"] > used["hits"] + used["misses"]  # the buffers did come from the cache
    assert method == "torch_profiler_memory"
    want = out_bytes * (1 + p.columns if mode == "fwd_bwd" else 1)
    assert want <= peak <= 1.1 * want + MiB


def test_quadratic_reference_needs_the_pairwise_matrix():
    p = Problem(impl="reference", batch=1, seq_len=512, width=32, heads=2)
    peak, _ = peak_memory(make_step(p, make_inputs(p)), "cpu")
    assert peak >= p.batch * p.heads * p.seq_len**2 * 8  # one float64 N×N matrix per head


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_vmhwm_fallback_sees_touched_pages():
    peak = memory._vmhwm_peak(lambda: torch.ones(64 * MiB, dtype=torch.uint8))
    assert peak == pytest.approx(64 * MiB, rel=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak():
    peak, method = peak_memory(lambda: torch.empty(64 * MiB, dtype=torch.uint8, device="cuda"), "cuda")
    assert method == "cuda_caching_allocator_peak"
    assert peak == pytest.approx(64 * MiB, rel=0.02)
