"""Presets: every shipped one expands; overrides, token budgets and skips behave."""

from __future__ import annotations

import pytest

from fastformer_bench import presets


@pytest.mark.parametrize("name", presets.names())
def test_every_shipped_preset_expands(name):
    problems, skipped = presets.expand(presets.load(name))
    assert problems
    assert len({p.point_id for p in problems}) == len(problems)


def _cpu_impls(*, compiling: bool) -> set[str]:
    import torch

    from fastformer_bench import impls

    found = set()
    for name in impls.names():
        impl = impls.get(name)
        # a quadratic one that is no softmax baseline only serves as a ground truth (reference, softmax_blocked)
        truth = impl.quadratic and impl.baseline_rank is None
        if not truth and (compiling or not impl.compiles) and impl.unsupported_reason("cpu", torch.float32) is None:
            found.add(name)
    return found


def test_the_gate_presets_cover_every_implementation_that_runs_here():
    # a regression in an implementation the gate never measures would pass every gate
    wall, _ = presets.expand(presets.load("gate"))
    assert _cpu_impls(compiling=True) <= {p.impl for p in wall}
    counted, _ = presets.expand(presets.load("gate-instructions"))
    assert _cpu_impls(compiling=False) <= {p.impl for p in counted}
    assert "reference" not in {p.impl for p in wall + counted}


def test_required_presets_exist():
    assert {"quick", "cpu", "gpu", "paper-fig2"} <= set(presets.names())


def test_paper_fig2_keeps_the_token_budget():
    problems, _ = presets.expand(presets.load("paper-fig2"))
    assert {p.batch * p.seq_len for p in problems} == {65536}
    assert min(p.seq_len for p in problems) == 128 and max(p.seq_len for p in problems) == 65536
    assert {p.scope for p in problems} == {"layer"}


def test_overrides_replace_an_axis_in_every_grid_and_softmax_needs_three_columns():
    problems, skipped = presets.expand(presets.load("quick"), {"seq_len": [64], "columns": [2, 3]})
    assert {p.seq_len for p in problems} == {64}
    assert all(p.family == "additive" for p in problems if p.columns == 2)
    assert {p.impl for p, _ in skipped} == {"softmax_naive", "softmax_sdpa"}


def test_unknown_preset_and_bad_values_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        presets.load("nope")
    with pytest.raises(ValueError, match="positive integer"):
        presets.expand(presets.load("quick"), {"seq_len": [0]})
    path = tmp_path / "p.toml"
    path.write_text("[settings]\nwarp_speed = 9\n[[grid]]\nimpl = ['eager']\n")
    with pytest.raises(ValueError, match="unknown settings"):
        presets.load(str(path))


def test_a_preset_file_and_a_python_run_go_through_one_settings_check(tmp_path):
    from fastformer_bench import sweep

    path = tmp_path / "p.toml"
    path.write_text("[settings]\nmin_time_s = -1\n[[grid]]\nimpl = ['eager']\n")
    with pytest.raises(ValueError) as from_file:
        presets.load(str(path))
    with pytest.raises(ValueError) as from_python:
        sweep.run("quick", tmp_path / "out", settings={"min_time_s": -1})
    assert str(from_file.value) == f"preset {path}: {from_python.value}"
    quick = presets.load("quick")
    assert presets.settings_for(quick, min_time_s=0.5, threads=None).min_time_s == 0.5
    assert presets.settings_for(quick).threads == quick.settings.get("threads")
    assert type(presets.settings_for(presets.load("probe-quick"))).__name__ == "ProbeSettings"


def test_the_cpu_process_preset_is_the_cpu_presets_allocator_study_alone():
    # the same settings and a subset of the same points, so the two presets cannot drift apart: a cpu-process
    # run's points compare one to one with a cpu run's
    cpu, process = presets.load("cpu"), presets.load("cpu-process")
    assert process.settings == cpu.settings
    (cpu_points, _), (process_points, _) = presets.expand(cpu), presets.expand(process)
    ids = {p.point_id for p in process_points}
    assert ids <= {p.point_id for p in cpu_points}
    plain = {(p.impl, p.seq_len, p.mode) for p in process_points if p.allocator == "plain"}
    warm = {(p.impl, p.seq_len, p.mode) for p in process_points if p.allocator in (None, "warm")}
    assert plain and plain <= warm  # every plain point has its warm twin in the same run
    assert {p.allocator for p in process_points} == {None, "plain", "warm", "thp", "jemalloc", "tcmalloc"}
