"""The allocator axis (axes.py): a point names the allocator condition it is measured under; unnamed it is the
sweep process's own (warm) and keeps its point_id; `run --allocator` comes from the table; presets may name it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastformer_bench import axes, presets
from fastformer_bench.problem import Problem


def test_the_axis_is_optional_and_keeps_old_point_ids():
    point = Problem(impl="eager", batch=1, seq_len=32, width=16, heads=2)
    assert "allocator" not in point.params() and point.method("allocator") is None
    plain = point.with_(allocator="plain")
    assert plain.params()["allocator"] == "plain" and plain.point_id != point.point_id
    assert axes.get("allocator").parse("plain,warm") == ["plain", "warm"]
    assert plain.skip_reason() is None  # a CPU point may name it, unlike timing and cache


def test_a_bad_allocator_is_one_sentence_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "run", "--preset", "quick", "--out", "X",
                           "--allocator", "plain,mimalloc"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "unknown allocator 'mimalloc'; known: plain, warm, thp, jemalloc, tcmalloc" in line


def test_run_sweeps_the_allocator_axis_into_the_records(tmp_path):
    out = tmp_path / "r"
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "run", "--preset", "quick", "--out", str(out),
                           "--impl", "eager", "--seq-len", "16", "--width", "8", "--heads", "2",
                           "--allocator", "plain,warm", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = {r["allocator"]: r for r in map(json.loads, (out / "points.jsonl").read_text().splitlines())}
    assert sorted(records) == ["plain", "warm"]
    # contended: a busy shared machine, not the condition's failure
    assert records["plain"]["status"] in ("ok", "contended"), records["plain"]["reason"]
    # plain ran in a child without mallopt; warm in the sweep process, whose heap is the harness's
    assert records["plain"]["allocator_process"]["glibc_mallopt"] == {}


@pytest.mark.parametrize("condition", axes.ALLOCATORS)
def test_the_cpu_preset_names_every_condition(condition):
    preset = presets.load("cpu")
    problems, _ = presets.expand(preset)
    assert any(p.allocator == condition for p in problems)
    plain = [p for p in problems if p.allocator == "plain"]
    assert {p.impl for p in plain} == {"eager", "compiled", "stream"}
