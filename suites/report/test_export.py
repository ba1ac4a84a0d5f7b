"""`export`: each format read back by its real consumer.

pytest-benchmark: its own loader (``FileStorage.load_benchmarks``, what ``compare`` and ``--benchmark-compare``
read with) and its ``compare`` command as a subprocess. github-action-benchmark: the action's documented schema
for ``customSmallerIsBetter`` (its src/extract.ts: a list of {name: string, value: number, range?: string,
unit: string, extra?: string}; a range the action can rescale reads "± number"). CSV: pandas.read_csv.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from testkit.imports import loaded_after
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench import cli, export
from fastformer_bench.commands import export as export_command
from fastformer_bench.results import FIELDS, load_records

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "results" / "cpu"
#: one point with known samples, so pytest-benchmark's statistics can be checked by hand
KNOWN = [1e-3, 2e-3, 3e-3, 4e-3, 10e-3]
ENV = {**run_env(), "hostname": "bench-host", "git_dirty": True, "logical_cores": 2,
       "run_id": "synthetic-20260102T030405Z"}


def _records() -> list[dict]:
    records = synthetic_records()
    for r in records:
        if (r["impl"], r["mode"], r["scope"], r["seq_len"], r["width"], r["columns"]) == ("eager", "fwd", "core",
                                                                                         256, 64, 3):
            r.update(samples=KNOWN, calls_per_sample=7, time_median=3e-3, time_p20=2e-3, time_p80=4e-3,
                     timing_method="perf_counter")
    return records


def _timed(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "ok" and r["samples"]]


@pytest.fixture
def synthetic(tmp_path) -> Path:
    return write_results(tmp_path / "results", _records(), ENV)


def _export(results: Path, fmt: str, out: Path) -> Path:
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    assert export_command.main(parser.parse_args([str(results), "--format", fmt, "--out", str(out)])) == 0
    return out


def _load_pytest_benchmark(path: Path, tmp_path: Path) -> list[dict]:
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    storage = FileStorage(tmp_path / "pb-storage", logger=Logger(Logger.QUIET))
    return list(storage.load_benchmarks(str(path)))


def _compare(tmp_path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stderr, done.stderr
    return done.stdout


#: the action's range parser (src/extractRangeInfo.ts): a range it can rescale between units
_GAB_RANGE = re.compile(r"(\+-|±)\s*(\d.*)")


def _check_github_action_benchmark(entries) -> None:
    """The action's customSmallerIsBetter schema, checked strictly (no coercion, no field it would drop)."""
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert isinstance(entry, dict)
        assert set(entry) <= {"name", "unit", "value", "range", "extra"}, entry
        assert {"name", "unit", "value"} <= set(entry), entry
        assert isinstance(entry["name"], str) and entry["name"]
        assert isinstance(entry["unit"], str) and entry["unit"]
        value = entry["value"]
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        for optional in ("range", "extra"):
            assert optional not in entry or isinstance(entry[optional], str)
        if "range" in entry:
            found = _GAB_RANGE.search(entry["range"])
            assert found and math.isfinite(float(found.group(2))), entry["range"]
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names)


# ---- pytest-benchmark -----------------------------------------------------------------------------------------


def test_pytest_benchmark_loads_in_its_own_loader(synthetic, tmp_path):
    out = _export(synthetic, "pytest-benchmark", tmp_path / "pb.json")
    benches = _load_pytest_benchmark(out, tmp_path)
    records = _records()
    timed = _timed(records)
    # correctness before speed: only ok points (not the incorrect 1000 s one, no oom, no unsupported)
    assert sorted(b["name"] for b in benches) == sorted(export.point_name(r) for r in timed)
    assert len(timed) < len(records) and all(b["median"] < 1 for b in benches)
    by_name = {b["name"]: b for b in benches}
    for r in timed:
        b = by_name[export.point_name(r)]
        assert b["data"] == r["samples"] and b["rounds"] == len(r["samples"])
        assert b["median"] == pytest.approx(statistics.median(r["samples"]), rel=1e-12)
        assert b["params"] == {name: r[name] for name in ("impl", "device", "dtype", "mode", "scope", "batch",
                                                          "seq_len", "width", "heads", "columns", "masked", "seed")}
        assert b["extra_info"]["flops"] == r["flops"] and b["extra_info"]["peak_bytes"] == r["peak_bytes"]
        assert b["extra_info"]["point_id"] == r["point_id"]
        assert f"N={r['seq_len']}" in b["group"] and r["impl"] not in b["group"]
        assert b["fullname"].endswith(b["name"])
    known = by_name["eager[cpu-float32-fwd-core-B2-N256-D64-H2-C3]"]
    # pytest-benchmark's quartiles (method 3 for an odd count): q1 = 0.25 x[0] + 0.75 x[1], q3 = 0.75 x[3] + 0.25 x[4]
    expected = {"min": 1e-3, "max": 1e-2, "mean": 4e-3, "median": 3e-3, "q1": 1.75e-3, "q3": 5.5e-3,
                "iqr": 3.75e-3, "stddev": statistics.stdev(KNOWN), "total": 0.02, "ops": 250.0, "ld15iqr": 1e-3,
                "hd15iqr": 1e-2, "rounds": 5, "iterations": 7}
    for field, value in expected.items():
        assert known[field] == pytest.approx(value, rel=1e-12), field
    assert known["outliers"] == "1;0"  # one beyond mean ± stddev, none beyond the Tukey fences


def test_pytest_benchmark_machine_and_commit_info_come_from_run_json(synthetic, tmp_path):
    data = json.loads(_export(synthetic, "pytest-benchmark", tmp_path / "pb.json").read_text())
    machine, commit = data["machine_info"], data["commit_info"]
    assert machine["node"] == "bench-host" and machine["python_version"] == ENV["python"]
    assert machine["cpu"] == {"brand_raw": ENV["cpu_model"], "count": 2}
    assert machine["fastformer_bench_run"] == ENV
    assert commit["id"] == ENV["git_commit"] and commit["dirty"] is True
    assert data["datetime"] == "2026-01-02T03:04:05+00:00"
    import pytest_benchmark

    assert data["version"] == pytest_benchmark.__version__


def test_pytest_benchmark_compare_shows_every_point_and_compares_two_runs(synthetic, tmp_path):
    base = _export(synthetic, "pytest-benchmark", tmp_path / "base.json")
    table = _compare(tmp_path, str(base), "--columns", "min,median,rounds,iterations")
    timed = _timed(_records())
    for r in timed:
        assert export.point_name(r) in table
        assert f"benchmark '{export.point_group(r)}'" in table
    # a second run, eager 25 % slower: `compare --between` pairs the points of both files by fullname
    slower = []
    for r in _records():
        if r["impl"] == "eager" and r["samples"]:
            r = {**r, "samples": [s * 1.25 for s in r["samples"]]}
        slower.append(r)
    cand = _export(write_results(tmp_path / "cand", slower, ENV), "pytest-benchmark", tmp_path / "cand.json")
    between = _compare(tmp_path, str(base), str(cand), "--between", "median", "-k", "eager and fwd-core")
    assert "ERROR" not in between
    assert "+25.0" in between and "eager[cpu-float32-fwd-core-B2-N256-D64-H2-C3]" in between


def test_two_points_with_the_same_axes_keep_apart(tmp_path):
    records = [r for r in _records() if r["impl"] == "eager" and r["status"] == "ok"][:1]
    twin = {**records[0], "point_id": "twin", "threads": 4}
    out = _export(write_results(tmp_path / "r", [*records, twin]), "pytest-benchmark", tmp_path / "pb.json")
    names = [b["name"] for b in _load_pytest_benchmark(out, tmp_path)]
    assert len(set(names)) == 2 and any("twin" in n for n in names)


# ---- github-action-benchmark ------------------------------------------------------------------------------------


def test_github_action_benchmark_matches_the_actions_schema(synthetic, tmp_path):
    entries = json.loads(_export(synthetic, "github-action-benchmark", tmp_path / "gab.json").read_text())
    _check_github_action_benchmark(entries)
    timed = _timed(_records())
    assert [e["name"] for e in entries] == [export.point_name(r) for r in timed]
    for entry, r in zip(entries, timed):
        assert entry["unit"] == "ms"
        assert entry["value"] == pytest.approx(r["time_median"] * 1e3, rel=1e-12)
        assert float(entry["range"].split()[-1]) == pytest.approx((r["time_p80"] - r["time_p20"]) / 2 * 1e3,
                                                                  rel=1e-5)
        assert r["point_id"] in entry["extra"]


def test_schema_check_rejects_what_the_action_would(synthetic, tmp_path):
    good = {"name": "a", "unit": "ms", "value": 1.0}
    _check_github_action_benchmark([good, {**good, "name": "b", "range": "± 0.1", "extra": "x"}])
    for bad in ([], [{"name": "a", "unit": "ms"}], [{**good, "value": "1"}], [{**good, "value": True}],
                [{**good, "range": 0.1}], [{**good, "value": math.nan}], [good, good], [{**good, "tool": "x"}]):
        with pytest.raises(AssertionError):
            _check_github_action_benchmark(bad)


# ---- csv --------------------------------------------------------------------------------------------------------


def test_csv_keeps_every_record_and_reads_in_pandas(synthetic, tmp_path):
    frame = pd.read_csv(_export(synthetic, "csv", tmp_path / "r.csv"))
    records = _records()
    assert len(frame) == len(records)
    assert list(frame.columns[:len(FIELDS)]) == list(FIELDS)
    assert frame["status"].value_counts().to_dict() == pd.Series([r["status"] for r in records]).value_counts() \
        .to_dict()
    by_id = frame.set_index("point_id")
    for r in records:
        row = by_id.loc[r["point_id"]]
        if r["samples"]:
            assert json.loads(row["samples"]) == r["samples"]  # exact: floats round-trip
        else:
            assert pd.isna(row["samples"])
        assert row["seq_len"] == r["seq_len"] and bool(row["masked"]) == r["masked"]
        assert (pd.isna(row["reason"]) if r["reason"] is None else row["reason"] == r["reason"])
    assert json.loads(by_id.loc[records[0]["point_id"], "flops_notes"]) == records[0]["flops_notes"]


# ---- the committed CPU study (schema 2) --------------------------------------------------------------------------


def test_real_results_export_in_every_format(tmp_path):
    records = load_records([REAL])
    timed = _timed(records)
    assert timed and all(r["schema"] == 2 for r in records)
    pb = _export(REAL, "pytest-benchmark", tmp_path / "cpu.json")
    benches = _load_pytest_benchmark(pb, tmp_path)
    # the study's threads axis: its 1- and 2-thread points share a name, so both keep their point_id in it
    names = [name for _, name in export.named_points(timed)]
    assert len(set(names)) == len(names) > len({export.point_name(r) for r in timed})
    assert sorted(b["name"] for b in benches) == sorted(names)
    assert {b["iterations"] for b in benches} == {r["calls_per_sample"] for r in timed}
    table = _compare(tmp_path, str(pb), "--columns", "median,rounds")
    assert all(name in table for name in names)
    data = json.loads(pb.read_text())
    run = json.loads((REAL / "run.json").read_text())
    assert data["machine_info"]["node"] == run["hostname"] and data["commit_info"]["id"] == run["git_commit"]
    _check_github_action_benchmark(json.loads(_export(REAL, "github-action-benchmark", tmp_path / "g.json")
                                              .read_text()))
    frame = pd.read_csv(_export(REAL, "csv", tmp_path / "cpu.csv"))
    assert len(frame) == len(records) and set(frame["schema"]) == {2}


# ---- bad input, stdout, determinism, no torch ------------------------------------------------------------------


def _one_sentence(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith(".")
    return text


def test_bad_input_is_a_value_error_in_one_sentence(synthetic, tmp_path):
    with pytest.raises(ValueError) as exc:
        export.render(tmp_path / "missing", "csv")
    assert "missing" in _one_sentence(exc)
    with pytest.raises(ValueError) as exc:
        export.render(synthetic, "asv")
    assert "asv" in _one_sentence(exc) and "pytest-benchmark" in str(exc.value)
    untimed = write_results(tmp_path / "untimed", [r for r in _records() if r["status"] != "ok"])
    for fmt in ("pytest-benchmark", "github-action-benchmark"):
        with pytest.raises(ValueError) as exc:
            export.render(untimed, fmt)
        assert "no timed point" in _one_sentence(exc)
    assert export.render(untimed, "csv")[0].count("\n") == 1 + len([r for r in _records() if r["status"] != "ok"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "points.jsonl").write_text("")
    with pytest.raises(ValueError) as exc:
        export.render(empty, "csv")
    assert "no records" in _one_sentence(exc)


def test_without_pytest_benchmark_its_format_says_what_to_install(synthetic, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytest_benchmark.stats", None)
    with pytest.raises(ValueError, match="pip install pytest-benchmark"):
        export.render(synthetic, "pytest-benchmark")


def test_stdout_without_out_and_byte_identical_reruns(synthetic, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    assert export_command.main(parser.parse_args([str(synthetic), "--format", "github-action-benchmark"])) == 0
    captured = capsys.readouterr()
    _check_github_action_benchmark(json.loads(captured.out))
    assert "timed points" in captured.err and len(captured.err.strip().splitlines()) == 1
    for fmt in export.FORMATS:
        first = _export(synthetic, fmt, tmp_path / f"a.{fmt}").read_bytes()
        assert _export(synthetic, fmt, tmp_path / f"b.{fmt}").read_bytes() == first


def test_export_never_imports_torch(synthetic):
    code = f"from fastformer_bench import export\n[export.render({str(synthetic)!r}, f) for f in export.FORMATS]"
    assert loaded_after(code) == []


def _mounted() -> bool:
    parser = cli.build_parser()
    return any(isinstance(a, argparse._SubParsersAction) and "export" in a.choices for a in parser._actions)


@pytest.mark.skipif(not _mounted(), reason="cli.py does not mount `export` yet")
def test_cli_exports_and_maps_bad_input_to_exit_2(synthetic, tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert cli.main(["export", str(synthetic), "--format", "pytest-benchmark", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["benchmarks"]
    capsys.readouterr()
    for argv in (["export", str(tmp_path / "missing"), "--format", "csv"],
                 ["export", str(synthetic), "--format", "asv"],
                 ["export", str(synthetic)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
