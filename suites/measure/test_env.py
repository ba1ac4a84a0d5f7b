"""measure.env: a JSON-able environment that degrades quietly, energy off-GPU, copy bandwidth."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastformer_bench.measure.energy import energy_per_call
from fastformer_bench.measure.env import collect_env, copy_bandwidth

REPO = Path(__file__).resolve().parents[2]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def test_collect_env_is_json_and_describes_this_process():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet means no warnings at all
        env = collect_env(threads=2, argv=["fastformer-bench", "env"])
    assert json.loads(json.dumps(env)) == env
    assert env["torch"] == torch.__version__
    assert env["logical_cores"] == os.cpu_count()
    assert env["torch_threads"] == torch.get_num_threads() and env["threads_requested"] == 2
    assert env["argv"] == ["fastformer-bench", "env"]
    assert env["parallel_info"].get("ATen parallel backend")
    assert env["load_avg_1m"] is None or env["load_avg_1m"] >= 0
    commit = env["git_commit"]
    assert commit is None or (len(commit) == 40 and isinstance(env["git_dirty"], bool))


@NO_GPU
def test_gpu_fields_are_none_without_a_gpu():
    env = collect_env()
    gpu = {k: v for k, v in env.items() if k.startswith("gpu_")}
    assert gpu and all(v is None for v in gpu.values())
    assert env["cuda_available"] is False


def test_allocator_and_thread_variables_are_recorded(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = collect_env()["env"]
    assert env["MALLOC_ARENA_MAX"] == "2" and env["OMP_NUM_THREADS"] == "2"
    assert "UNRELATED_SECRET" not in env


def test_no_warnings_even_under_w_error():
    code = ("from fastformer_bench.measure.env import collect_env; "
            "from fastformer_bench.measure.timing import gpu_clock_state; collect_env(); gpu_clock_state()")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr


def test_energy_is_none_off_gpu():
    assert energy_per_call(lambda: None, "cpu") is None


@NO_GPU
def test_energy_is_none_for_cuda_without_a_gpu():
    assert energy_per_call(lambda: None, "cuda") is None


def test_copy_bandwidth_is_a_plausible_rate():
    rate = copy_bandwidth("cpu", nbytes=16 * 2**20)
    assert 1e8 < rate < 1e13  # between 100 MB/s and 10 TB/s: catches a unit slip either way


def test_copy_bandwidth_copies_float32_elements_of_the_bytes_asked(monkeypatch):
    # The roof is a float32 copy, what the studies stream: torch copies uint8 tensors of the same bytes 20-30 %
    # slower on the reference VM, a roof that flattered every memory-bound implementation measured against it.
    import fastformer_bench.measure.env as env

    made = []
    real_ones = torch.ones

    def ones(*shape, **kwargs):
        made.append((shape, kwargs.get("dtype")))
        return real_ones(*shape, **kwargs)

    monkeypatch.setattr(env.torch, "ones", ones)
    copy_bandwidth("cpu", nbytes=4 * 2**20)
    assert made == [((2**20,), torch.float32)]


def test_contention_degrades_to_none_without_counters():
    from fastformer_bench.measure.host import contention_since

    shares = contention_since({"wall_s": 0.0})  # a start with no counters (an OS without PSI or /proc/stat)
    assert shares == {"cpu_wait": None, "cpu_pressure": None, "cpu_steal": None}


def test_sysfs_cache_sizes_are_read_in_bytes():
    from fastformer_bench.measure.env import _size_bytes, cpu_caches

    assert (_size_bytes("32K"), _size_bytes("32768K\n"), _size_bytes("8M"), _size_bytes("512")) == \
        (32768, 32 * 2**20, 8 * 2**20, 512)
    caches = cpu_caches()
    if not caches:
        pytest.skip("no CPU cache description in sysfs here")
    env = collect_env()
    # the study must know how far its largest inputs are past the last level (issue 13)
    assert env["last_level_cache_bytes"] == max(caches.values()) == env["cpu_caches_bytes"][max(caches)]
    assert all(size >= 1024 for size in caches.values()) and caches.get("L1d", 0) < env["last_level_cache_bytes"]
