"""Allocator conditions (measure/allocator.py): a point measured the way a user's plain process gets it (plain),
the harness's tuned heap (warm), torch's transparent huge pages (thp), or jemalloc / tcmalloc preloaded, each in a
child process started with it (runner._isolated, worker.py)."""

from __future__ import annotations

import platform

import pytest

from fastformer_bench import runner, worker
from fastformer_bench.measure import allocator
from fastformer_bench.point import Settings
from fastformer_bench.problem import Problem

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
FAST = Settings(threads=1, warmup_s=0.0, min_time_s=0.01, min_samples=2, max_samples=3, time_limit_s=60,
                count_flops=False, measure_energy=False)
POINT = Problem(impl="eager", batch=1, seq_len=32, width=16, heads=2)


def _child(condition: str) -> dict:
    return runner._isolated(POINT, FAST, "run", None, allocator=condition)


@pytest.mark.skipif(not GLIBC, reason="the plain and warm conditions are glibc's")
def test_a_plain_point_child_keeps_the_c_librarys_defaults_and_a_warm_one_does_not():
    plain, warm = _child("plain"), _child("warm")
    assert plain["status"] == warm["status"] == "ok", (plain["reason"], warm["reason"])
    assert (plain["allocator"], warm["allocator"]) == ("plain", "warm")
    # plain: no mallopt, and glibc still serves a 64 MiB block with its own mmap (M_MMAP_MAX at its default)
    assert plain["allocator_process"]["glibc_mallopt"] == {}
    assert plain["allocator_process"]["large_blocks_mapped"] is True
    assert warm["allocator_process"]["glibc_mallopt"] == {"M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}
    assert warm["allocator_process"]["large_blocks_mapped"] is False


@pytest.mark.parametrize("condition", ["jemalloc", "tcmalloc"])
def test_a_preloaded_library_is_mapped_into_the_child_where_installed(condition):
    if allocator.find_library(allocator.PRELOADS[condition]) is None:
        pytest.skip(f"{allocator.PRELOADS[condition]} is not installed (apt-get install libjemalloc2 "
                    "libtcmalloc-minimal4)")
    record = _child(condition)
    assert record["status"] == "ok", record["reason"]
    assert record["allocator"] == condition
    # the mapped file itself (libtcmalloc_minimal.so.4 links to libtcmalloc_minimal.so.4.5.x)
    assert "/" + allocator.PRELOADS[condition] in record["allocator_process"]["preloaded"]
    assert record["allocator_process"]["glibc_mallopt"] == {}


@pytest.mark.parametrize("condition", ["jemalloc", "tcmalloc"])
def test_a_preloaded_library_not_installed_is_unsupported_with_the_reason(monkeypatch, condition):
    monkeypatch.setattr(allocator, "find_library", lambda soname: None)
    record = _child(condition)
    assert (record["status"], record["allocator"]) == ("unsupported", condition)
    assert allocator.PRELOADS[condition] in record["reason"] and "not installed" in record["reason"]


def test_a_preload_the_process_does_not_map_is_unsupported_in_the_child():
    # this test process was not started with jemalloc preloaded, so its maps do not show it
    reason = worker._missing("jemalloc")
    assert reason is not None and "libjemalloc.so.2" in reason and "/proc/self/maps" in reason
    assert worker._missing("plain") is None and worker._missing(None) is None


@pytest.mark.parametrize("text,reason", [("always [madvise] never\n", None), ("[always] madvise never\n", None),
                                         ("always madvise [never]\n", "'never'")])
def test_thp_needs_the_kernel_to_allow_huge_pages(tmp_path, text, reason):
    setting = tmp_path / "enabled"
    setting.write_text(text)
    found = allocator.unsupported_reason("thp", setting=str(setting))
    if reason is None:
        assert found is None
    else:
        assert reason in found and str(setting) in found
    assert "unavailable" in allocator.unsupported_reason("thp", setting=str(tmp_path / "missing"))


def test_a_condition_the_machine_cannot_give_is_unsupported_without_a_child(monkeypatch):
    monkeypatch.setattr(allocator, "unsupported_reason", lambda condition: "transparent huge pages are 'never'")
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: pytest.fail("a child was started"))
    record = _child("thp")
    assert (record["status"], record["reason"], record["allocator"]) == (
        "unsupported", "transparent huge pages are 'never'", "thp")


def test_each_condition_starts_from_an_environment_without_allocator_settings(monkeypatch):
    monkeypatch.setattr(allocator, "find_library", lambda soname: f"/lib/{soname}")
    base = {"PATH": "/bin", "LD_PRELOAD": "/lib/libother.so", "MALLOC_ARENA_MAX": "2", "GLIBC_TUNABLES": "x",
            "THP_MEM_ALLOC_ENABLE": "1"}
    assert allocator.condition_env("plain", base) == {"PATH": "/bin"}
    assert allocator.condition_env("warm", base) == {"PATH": "/bin"}
    assert allocator.condition_env("thp", base) == {"PATH": "/bin", "THP_MEM_ALLOC_ENABLE": "1"}
    assert allocator.condition_env("jemalloc", base) == {"PATH": "/bin", "LD_PRELOAD": "/lib/libjemalloc.so.2"}
    assert allocator.condition_env("tcmalloc", base)["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"
    assert allocator.unsupported_reason("mimalloc").startswith("unknown allocator 'mimalloc'")


def test_a_point_naming_a_condition_other_than_the_sweeps_is_measured_in_a_child(monkeypatch, tmp_path):
    from fastformer_bench.results import HELD_FILE, ResultStore

    seen = []

    def isolated(problem, settings, run_id, preset, **kwargs):
        allocator = kwargs.get("allocator")
        seen.append(allocator)
        return {"point_id": problem.point_id, "status": "unsupported", "reason": "test", "allocator": allocator}

    conditions = {64: "thp", 128: None}
    monkeypatch.setattr(runner, "allocator_of", lambda problem: conditions.get(problem.seq_len, "plain"))
    monkeypatch.setattr(runner, "_isolated", isolated)
    monkeypatch.setattr(runner, "measure_point", lambda problem, settings, **kw: {
        "point_id": problem.point_id, "status": "unsupported", "reason": "in process"})
    problems = [POINT, POINT.with_(seq_len=64), POINT.with_(seq_len=128)]
    records = runner.measure_all(problems, FAST, ResultStore(tmp_path), ResultStore(tmp_path, HELD_FILE),
                                 run_id="run", preset=None, isolate=False, progress=False)
    assert seen == ["plain", "thp"]
    assert [r["reason"] for r in records] == ["test", "test", "in process"]


def test_a_thp_child_starts_with_torchs_huge_page_switch_where_the_kernel_allows_it():
    if allocator.unsupported_reason("thp") is not None:
        pytest.skip(allocator.unsupported_reason("thp"))
    record = _child("thp")
    assert record["status"] == "ok", record["reason"]
    assert record["allocator_process"]["thp_mem_alloc"] == "1"
    assert record["allocator_process"]["glibc_mallopt"] == {}
