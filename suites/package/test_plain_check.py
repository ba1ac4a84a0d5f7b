"""scripts/plain_check.py, the check that the suite's stored `plain` figure is what a plain script gets: which
points it checks, that its processes carry no allocator setting, and that it refuses what it cannot check."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from fastformer_bench.results import new_record

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "plain_check.py"


@pytest.fixture(scope="module")
def plain_check():
    spec = importlib.util.spec_from_file_location("plain_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(**changes) -> dict:
    fields = {"impl": "eager", "family": "additive", "device": "cpu", "dtype": "float32", "mode": "fwd",
              "scope": "core", "status": "ok", "allocator": "plain", "masked": False, "columns": 3, "batch": 1,
              "seq_len": 64, "width": 16, "heads": 2, "threads": 1, "time_median": 1e-3, **changes}
    point_id = "-".join(f"{name}={fields[name]}" for name in sorted(fields) if name != "time_median")
    return new_record(point_id=point_id, **fields)


def test_its_processes_get_no_allocator_setting(plain_check, monkeypatch):
    for name, value in {"MALLOC_ARENA_MAX": "1", "LD_PRELOAD": "libtcmalloc_minimal.so.4", "GLIBC_TUNABLES":
                        "glibc.malloc.mmap_max=0", "THP_MEM_ALLOC_ENABLE": "1", "TCMALLOC_RELEASE_RATE": "0",
                        "JEMALLOC_CONF": "x", "MALLOC_TRIM_THRESHOLD_": "-1"}.items():
        monkeypatch.setenv(name, value)
    env = plain_check.plain_environment()
    assert not [k for k in env if k.startswith(("MALLOC_", "JEMALLOC_", "TCMALLOC_"))]
    assert not {"LD_PRELOAD", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE"} & set(env)
    assert env["PATH"] == os.environ["PATH"]


def test_it_checks_only_ok_plain_unmasked_cpu_forward_points(plain_check, tmp_path):
    kept = _record(seq_len=128)
    others = [_record(allocator=None), _record(allocator="warm"), _record(status="incorrect"),
              _record(mode="fwd_bwd"), _record(masked=True), _record(device="cuda"), _record(scope="layer"),
              _record(family="softmax", impl="softmax_sdpa")]
    (tmp_path / "points.jsonl").write_text("\n".join(json.dumps(r) for r in [*others, kept]) + "\n")
    assert plain_check.plain_points(tmp_path) == [kept]


def test_a_folder_it_cannot_check_is_one_sentence_and_exit_2(plain_check, tmp_path, capsys):
    assert plain_check.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("holds no points.jsonl.")
    (tmp_path / "points.jsonl").write_text(json.dumps(_record(allocator="warm")) + "\n")
    assert plain_check.main([str(tmp_path)]) == 2
    assert "no ok plain-condition CPU forward point" in capsys.readouterr().err
    (tmp_path / "points.jsonl").write_text(json.dumps(_record()) + "\n{not json\n")
    assert plain_check.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "points.jsonl:2 is not valid JSON" in err


def test_a_point_is_timed_in_fresh_processes_and_compared(plain_check, tmp_path, capsys):
    (tmp_path / "points.jsonl").write_text(json.dumps(_record(time_median=1e3)) + "\n")  # far from any real time
    out = tmp_path / "check.json"
    assert plain_check.main([str(tmp_path), "--calls", "3", "--processes", "1", "--json", str(out)]) == 1
    (row,) = json.loads(out.read_text())["points"]
    assert row["calls"] == 3 and 0 < row["script_min_s"] <= row["script_s"] <= row["script_max_s"]
    assert row["ratio"] == pytest.approx(1e3 / row["script_s"]) and row["ratio"] > 1.15
    assert "stored / script" in capsys.readouterr().out


def test_a_condition_is_checked_under_the_setting_the_report_tells_users_to_type(plain_check, monkeypatch, tmp_path):
    from fastformer_bench.axes import REMEDY_ENV
    from fastformer_bench.report.sections.process import REMEDIES

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the caller's own setting never leaks into a check
    env = plain_check.condition_environment("warm")
    assert {k: env[k] for k in REMEDY_ENV["warm"]} == REMEDY_ENV["warm"] and "MALLOC_ARENA_MAX" not in env
    assert plain_check.condition_environment("tcmalloc")["LD_PRELOAD"] == "libtcmalloc_minimal.so.4"
    assert "LD_PRELOAD" not in plain_check.condition_environment("plain")
    for condition, setting in REMEDY_ENV.items():  # the report's one-liner is exactly what is checked
        assert REMEDIES[condition].startswith("`" + " ".join(f"{k}={v}" for k, v in setting.items()) + "`")
    stored = [_record(allocator="warm", seq_len=256), _record(allocator=None), _record()]
    (tmp_path / "points.jsonl").write_text("\n".join(json.dumps(r) for r in stored) + "\n")
    assert plain_check.plain_points(tmp_path, "warm") == [stored[0]]  # a point naming no condition is not checked
    assert plain_check.main([str(tmp_path), "--condition", "thp"]) == 2


def test_a_point_measured_again_is_exactly_the_stored_one(plain_check, tmp_path):
    """--remeasure's one-point preset expands to the stored point (the same point id) with the run's settings,
    less the FLOP cross-check, energy and revisits, which do not change the time."""
    from fastformer_bench import presets

    folder = Path(__file__).resolve().parents[2] / "results" / "cpu-process"
    settings = json.loads((folder / "run.json").read_text())["settings"]
    for record in plain_check.plain_points(folder):
        path = tmp_path / "point.toml"
        path.write_text(plain_check.one_point_preset(record, settings))
        preset = presets.load(str(path))
        problems, skipped = presets.expand(preset)
        assert [p.point_id for p in problems] == [record["point_id"]] and not skipped
        chosen = presets.settings_for(preset)
        assert (chosen.pin_cpus, chosen.min_time_s, chosen.max_spread) == (
            settings["pin_cpus"], settings["min_time_s"], settings["max_spread"])
        assert (chosen.revisits, chosen.count_flops, chosen.measure_energy) == (0, False, False)


def test_remeasure_runs_the_harness_on_the_point_then_the_script(plain_check, tmp_path, capsys):
    from fastformer_bench.problem import Problem

    problem = Problem(impl="eager", batch=1, seq_len=64, width=16, heads=2, allocator="plain")
    record = {**_record(), **problem.params(), "threads": 1, "point_id": problem.point_id, "time_median": 1e3}
    (tmp_path / "points.jsonl").write_text(json.dumps(record) + "\n")
    settings = {"threads": 1, "pin_cpus": False, "warmup_s": 0.01, "min_time_s": 0.02, "min_samples": 3,
                "max_samples": 5, "max_spread": 10.0, "max_attempts": 1, "revisits": 2, "time_limit_s": 120}
    (tmp_path / "run.json").write_text(json.dumps({"settings": settings}))
    out = tmp_path / "check.json"
    code = plain_check.main([str(tmp_path), "--calls", "3", "--processes", "1", "--remeasure", "--json", str(out)])
    assert code == 1  # the stored 1000 s is far from the script's time; the new harness figure is not
    (row,) = json.loads(out.read_text())["points"]
    assert 0 < row["remeasured_s"] < 1
    assert row["remeasured_ratio"] == pytest.approx(row["remeasured_s"] / row["script_s"])
    assert "measured again / script: " in capsys.readouterr().out
    (tmp_path / "run.json").unlink()
    assert plain_check.main([str(tmp_path), "--remeasure"]) == 2
    assert "run.json" in capsys.readouterr().err


@pytest.mark.parametrize("low, high, expected", [
    (0.90, 1.10, "agrees"), (0.85, 1.15, "agrees"), (0.50, 0.80, "differs"), (1.20, 1.40, "differs"),
    (0.80, 1.10, "undecided"), (0.95, 1.30, "undecided"), (0.50, 1.50, "undecided"), (None, None, "undecided")])
def test_a_verdict_needs_the_whole_interval_on_one_side_of_the_tolerance(plain_check, low, high, expected):
    assert plain_check.verdict(low, high, 0.15) == expected


def _fake_rounds(plain_check, monkeypatch, harness_medians: list[float], script_medians: list[float]) -> list[str]:
    """Harness and script stand-ins returning the given medians round after round; the log of who ran when."""
    log: list[str] = []
    harness, script = iter(harness_medians), iter(script_medians)

    def fake_remeasure(record, settings):
        value = next(harness)
        log.append("harness")
        return {"time_median": value, "samples": [value * f for f in (0.98, 1.0, 1.02)]}

    def fake_script(record, calls, condition="plain"):
        value = next(script)
        log.append("script")
        return [value * f for f in (0.97, 1.0, 1.03)]

    monkeypatch.setattr(plain_check, "remeasure", fake_remeasure)
    monkeypatch.setattr(plain_check, "time_in_plain_process", fake_script)
    return log


def test_paired_rounds_alternate_their_order_and_give_the_ratio_an_interval(plain_check, monkeypatch):
    log = _fake_rounds(plain_check, monkeypatch, [1.0, 1.1, 0.9, 1.05], [1.0, 1.0, 1.0, 1.0])
    found = plain_check.paired_rounds(_record(), {}, rounds=4, calls=3, condition="plain")
    assert log == ["harness", "script", "script", "harness", "harness", "script", "script", "harness"]
    assert found["harness_first"] == [True, False, True, False]
    assert found["harness_medians_s"] == pytest.approx([1.0, 1.1, 0.9, 1.05])
    assert found["ci_low"] < found["ratio"] < found["ci_high"]
    assert found["ratio"] == pytest.approx((1.0 * 1.1 * 0.9 * 1.05) ** 0.25, rel=0.02)


@pytest.mark.parametrize("harness, expected_exit, verdict", [
    ([1.00, 1.01, 0.99, 1.00], 0, "agrees"),            # rounds agree tightly
    ([0.50, 0.52, 0.49, 0.51], 1, "differs"),           # the harness is twice as fast every round
    ([0.70, 0.75, 1.30, 1.25], 3, "undecided")])        # a host drifting wider than the tolerance
def test_rounds_decide_the_exit_code(plain_check, monkeypatch, tmp_path, capsys, harness, expected_exit, verdict):
    (tmp_path / "points.jsonl").write_text(json.dumps(_record()) + "\n")
    (tmp_path / "run.json").write_text(json.dumps({"settings": {"threads": 1}}))
    # the four processes of the stored / script comparison come first, then the rounds
    _fake_rounds(plain_check, monkeypatch, harness, [1.0] * 4 + [1.0] * 4)
    out = tmp_path / "check.json"
    code = plain_check.main([str(tmp_path), "--calls", "3", "--processes", "4", "--remeasure", "--rounds", "4",
                             "--json", str(out)])
    assert code == expected_exit
    (row,) = json.loads(out.read_text())["points"]
    assert row["verdict"] == verdict and len(row["paired"]["script_medians_s"]) == 4
    assert f"): {verdict}" in capsys.readouterr().out


def test_rounds_need_remeasure_and_three_rounds(plain_check, tmp_path, capsys):
    (tmp_path / "points.jsonl").write_text(json.dumps(_record()) + "\n")
    assert plain_check.main([str(tmp_path), "--rounds", "4"]) == 2
    assert plain_check.main([str(tmp_path), "--remeasure", "--rounds", "2"]) == 2
    assert "at least 3 rounds" in capsys.readouterr().err
