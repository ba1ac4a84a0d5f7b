"""measure.env: a JSON-able environment that degrades quietly, and the machine roofs (copy bandwidth, GEMM FLOP/s)
per (device, threads). Energy: test_energy.py."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastformer_bench.measure.env import collect_env, copy_bandwidth, gemm_flops, machine_roofs
from fastformer_bench.problem import Problem

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


def tiny(**changes) -> Problem:
    return Problem(**{"impl": "eager", "batch": 1, "seq_len": 64, "width": 32, "heads": 2, **changes})


def test_gemm_flops_is_positive_and_leaves_the_thread_count():
    before = torch.get_num_threads()
    assert gemm_flops("cpu", threads=1, n=64, repeats=1) > 0
    assert torch.get_num_threads() == before


def test_gemm_flops_multiplies_in_the_dtype_asked(monkeypatch):
    seen = []
    real_mm = torch.mm

    def mm(a, b, **kwargs):
        seen.append((a.dtype, b.dtype))
        return real_mm(a, b, **kwargs)

    monkeypatch.setattr(torch, "mm", mm)
    assert gemm_flops("cpu", threads=1, n=32, repeats=1, dtype=torch.bfloat16) > 0
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


def test_a_gpu_roof_adds_the_gemm_rate_of_each_low_precision_dtype_its_points_use(monkeypatch):
    """A GPU multiplies bf16/fp16 on tensor cores at many times its float32 rate: the first GPU run set bf16
    points against a float32 roof of 51 TFLOP/s and read 923 % of it."""
    from fastformer_bench.measure import env

    monkeypatch.setattr(env, "copy_bandwidth", lambda device, nbytes=0, threads=None: 4e12)
    monkeypatch.setattr(env, "traffic_roofs", lambda device, threads, copy: {})
    rates = {torch.float32: 5e13, torch.bfloat16: 7.9e14, torch.float16: 7.5e14}
    monkeypatch.setattr(env, "gemm_flops", lambda device, threads=None, dtype=torch.float32: rates[dtype])
    found = env.roofs([("cuda", 16)], {"cuda": ["bfloat16", "float32", "float64"]})
    assert found == [{"device": "cuda", "threads": 16, "copy_bytes_per_s": 4e12, "gemm_flops_per_s": 5e13,
                      "gemm_dtype": "float32", "gemm_flops_per_s_by_dtype": {"float32": 5e13, "bfloat16": 7.9e14}}]
    # float32 points alone: nothing beside the float32 roof
    assert "gemm_flops_per_s_by_dtype" not in env.roofs([("cuda", 16)], {"cuda": ["float32"]})[0]


def test_machine_roofs_cover_each_device_and_thread_count(monkeypatch):
    from fastformer_bench.measure import env

    # the sizes the run measures are its business; here only which (device, threads) pairs and fields appear
    monkeypatch.setattr(env, "copy_bandwidth", lambda device, nbytes=0, threads=None: 10.0 * (threads or 7))
    monkeypatch.setattr(env, "gemm_flops", lambda device, threads=None, dtype=torch.float32: 100.0 * threads)
    monkeypatch.setattr(env, "traffic_roofs", lambda device, threads, copy: {})
    found = machine_roofs([tiny(threads=2), tiny(), tiny(threads=2, seq_len=128, dtype="bfloat16")], threads=1)
    # a CPU's roof is a float32 GEMM alone, whatever dtypes its points use
    assert found["roofs"] == [
        {"device": "cpu", "threads": 1, "copy_bytes_per_s": 10.0, "gemm_flops_per_s": 100.0, "gemm_dtype": "float32"},
        {"device": "cpu", "threads": 2, "copy_bytes_per_s": 20.0, "gemm_flops_per_s": 200.0, "gemm_dtype": "float32"}]
    assert found["copy_bytes_per_s"] == {"cpu": 10.0}  # at the setting, as before the roofs
    # no point at the setting: its copy bandwidth is still measured there, for the old readers
    assert machine_roofs([tiny(threads=2)], threads=1)["copy_bytes_per_s"] == {"cpu": 70.0}


def test_kernel_memory_reads_huge_pages_swap_and_damon_schemes_from_the_given_root(tmp_path):
    from fastformer_bench.measure.env import kernel_memory

    def write(path: str, text: str) -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    write("sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never\n")
    write("proc/meminfo", "MemTotal:  24683836 kB\nSwapTotal:       2048 kB\n")
    damon = "sys/kernel/mm/damon/admin/kdamonds"
    write(f"{damon}/0/state", "on\n")
    write(f"{damon}/0/contexts/0/operations", "paddr\n")
    write(f"{damon}/0/contexts/0/schemes/0/action", "pageout\n")
    write(f"{damon}/0/contexts/0/schemes/1/action", "lru_prio\n")
    write(f"{damon}/1/state", "off\n")
    assert kernel_memory(tmp_path) == {
        "thp_enabled": "madvise", "thp_defrag": "madvise", "swap_bytes": 2048 * 1024,
        # a worker with no monitoring context (kdamond 1) monitors nothing, so it names nothing
        "damon": [{"state": "on", "operations": "paddr", "actions": ["pageout", "lru_prio"]}]}
    assert kernel_memory(tmp_path / "nowhere") == {}  # nothing readable: nothing claimed


def test_the_cpu_signature_is_the_first_processors_family_model_and_stepping(tmp_path):
    from fastformer_bench.measure.env import cpu_signature

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: Other\n"
                    "cpu family\t: 6\nmodel\t\t: 85\n")
    assert cpu_signature(str(info)) == "AuthenticAMD family 25 model 17 stepping 1"
    info.write_text("processor\t: 0\nmodel name\t: some ARM core\n")  # no family/model lines: nothing to say
    assert cpu_signature(str(info)) is None
    assert cpu_signature(str(tmp_path / "missing")) is None
    if Path("/proc/cpuinfo").exists() and "cpu family" in Path("/proc/cpuinfo").read_text():
        assert collect_env()["cpu_signature"] == cpu_signature()
