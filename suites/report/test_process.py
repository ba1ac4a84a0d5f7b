"""The report's "What your process gets" section (report/sections/process.py): per implementation and size, the
time under each allocator condition, its ratio to warm, the remedy that closed most of a plain process's gap with
its measured effect, the shares of the roof matching the reads and writes, and a reason by every share above
100 %; absent (and no summary key) when the records hold one condition, as every committed report's do."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench.report import build_report, load, sections
from fastformer_bench.report.sections import process

#: seconds per condition at one size: plain worst, tcmalloc the best remedy (not thp, not warm)
TIMES = {"plain": 0.100, "warm": 0.040, "thp": 0.060, "tcmalloc": 0.038}
#: the roofs: a point reading 3e8 and writing 1e8 bytes needs 3e8 / 1e10 + 1e8 / 5e9 = 0.05 s at least
READ_BW, WRITE_BW, READ, WRITTEN = 1e10, 5e9, 3e8, 1e8


def _records(conditions=TIMES, impl: str = "eager", n: int = 65536, warm_named: bool = False) -> list[dict]:
    records = synthetic_records()
    base = next(r for r in records if r["impl"] == impl and r["mode"] == "fwd" and r["scope"] == "core"
                and r["seq_len"] == 2048 and r["width"] == 256 and r["columns"] == 3)
    for condition, seconds in conditions.items():
        r = copy.deepcopy(base)
        r.update(seq_len=n, point_id=f"{impl}-n{n}-{condition}", time_median=seconds, time_p20=seconds,
                 time_p80=seconds, samples=[seconds] * 3, bytes_read_min=READ, bytes_written_min=WRITTEN,
                 bytes_min=READ + WRITTEN)
        if condition != "warm" or warm_named:  # a point naming no condition is measured warm
            r["allocator"] = condition
        records.append(r)
    return records


def _env() -> dict:
    return {**run_env(), "last_level_cache_bytes": 2**20,
            "roofs": [{"device": "cpu", "threads": 2, "copy_bytes_per_s": 1e10, "read_bytes_per_s": READ_BW,
                       "write_bytes_per_s": WRITE_BW, "write_method": "plain"}]}


def test_one_condition_gives_no_section_and_no_summary_key(tmp_path):
    frame, runs = load([str(write_results(tmp_path / "results", synthetic_records(), _env()))])
    summary = sections.summarize(frame)
    assert "process" not in summary
    assert process.section(summary, runs) == []


def test_times_ratios_to_warm_and_the_remedy_with_its_effect(tmp_path):
    frame, runs = load([str(write_results(tmp_path / "results", _records(), _env()))])
    summary = sections.summarize(frame)
    found = summary["process"]
    assert found["conditions"] == ["plain", "warm", "thp", "tcmalloc"]
    (row,) = found["rows"]
    assert row["impl"] == "eager" and row["seq_len"] == 65536
    assert row["ratio_to_warm"] == {"plain": 2.5, "warm": 1.0, "thp": 1.5, "tcmalloc": 0.95}  # not 0.4 for plain
    assert row["remedy"] == {"condition": "tcmalloc", "plain_over_remedy": 2.632}
    text = "\n".join(process.section(summary, runs))
    assert text.startswith("## What your process gets")
    assert "100 ms (2.50×)" in text and "(0.400×)" not in text
    assert "`LD_PRELOAD=libtcmalloc_minimal.so.4`: 2.63×" in text  # the table's remedy column
    assert "`THP_MEM_ALLOC_ENABLE=1`:" not in text and "`GLIBC_TUNABLES=" not in text
    bullet = next(line for line in text.splitlines() if line.startswith("- eager"))
    assert "N = 65,536: a plain process takes 2.50× the warm heap's time" in bullet
    assert "`tcmalloc` at N = 65,536 (2.63× faster than plain)" in bullet
    # each remedy named once, as a user types it: only the ones some size needed
    assert "`tcmalloc`: `LD_PRELOAD=libtcmalloc_minimal.so.4` (Debian's libtcmalloc-minimal4)" in text
    assert text.count("`LD_PRELOAD=libtcmalloc_minimal.so.4` (Debian") == 1 and "`thp`: " not in text


@pytest.mark.parametrize("times", [
    {"plain": 0.030, "warm": 0.040, "tcmalloc": 0.035},  # plain is the fastest: nothing to remedy
    {"plain": 0.040, "warm": 0.041, "tcmalloc": 0.038},  # tcmalloc's median is lower, but the spreads overlap
])
def test_no_remedy_is_named_where_none_is_faster_than_plain_beyond_the_spreads(tmp_path, times):
    records = _records(times)
    for r in records:
        if r.get("point_id", "").startswith("eager-n65536"):  # each condition's p20-p80: ±5 % of its median
            r.update(time_p20=r["time_median"] * 0.95, time_p80=r["time_median"] * 1.05)
    frame, runs = load([str(write_results(tmp_path / "results", records, _env()))])
    summary = sections.summarize(frame)
    (row,) = summary["process"]["rows"]
    assert row["remedy"] is None
    text = "\n".join(process.section(summary, runs))
    assert "none needed" in text and "faster than plain)" not in text and "`LD_PRELOAD" not in text
    assert "none needed at N = 65,536 (no condition faster than plain beyond the spreads)" in text


def test_a_remedy_beyond_the_spreads_is_named(tmp_path):
    records = _records({"plain": 0.040, "warm": 0.041, "tcmalloc": 0.030})
    for r in records:
        if r.get("point_id", "").startswith("eager-n65536"):
            r.update(time_p20=r["time_median"] * 0.95, time_p80=r["time_median"] * 1.05)
    frame, _ = load([str(write_results(tmp_path / "results", records, _env()))])
    (row,) = sections.summarize(frame)["process"]["rows"]
    assert row["remedy"] == {"condition": "tcmalloc", "plain_over_remedy": 1.333}


def test_shares_against_the_matching_roof_and_why_above_100(tmp_path):
    frame, runs = load([str(write_results(tmp_path / "results", _records(), _env()))])
    summary = sections.summarize(frame)
    (row,) = summary["process"]["rows"]
    roof = _env()["roofs"][0]
    assert abs(process.share(row, 0.1, roof) - 0.5) < 1e-12  # (0.03 + 0.02) / 0.1, not the copy roof's
    text = "\n".join(process.section(summary, runs))
    assert "100 ms (2.50×), 50 %" in text and "40 ms, 125 %" in text
    above = [line for line in text.splitlines() if line.startswith("- Above 100 %")]
    assert len(above) == 2 and all(process.WHY_STORES in line for line in above)  # warm 125 %, tcmalloc 132 %
    assert "under warm reaches 125 %" in above[0] + above[1] and "under tcmalloc reaches 132 %" in text


def test_inputs_in_the_cache_name_the_cache_as_the_reason(tmp_path):
    env = {**_env(), "last_level_cache_bytes": 2**40}
    frame, runs = load([str(write_results(tmp_path / "results", _records(), env))])
    text = "\n".join(process.section(sections.summarize(frame), runs))
    assert process.WHY_CACHE in text and process.WHY_STORES not in text


def test_without_plain_there_is_no_remedy_and_without_roofs_no_share(tmp_path):
    records = _records({"warm": 0.04, "thp": 0.05})
    frame, runs = load([str(write_results(tmp_path / "results", records, run_env()))])
    summary = sections.summarize(frame)
    (row,) = summary["process"]["rows"]
    assert "remedy" not in row and row["ratio_to_warm"]["thp"] == 1.25
    text = "\n".join(process.section(summary, runs))
    assert "none needed" not in text  # without a plain point there is nothing to remedy, not "none needed"
    assert "Above 100 %" not in text and " %" not in text.split("| slice")[1]


def test_the_whole_report_places_the_section_and_never_imports_torch(tmp_path):
    results = write_results(tmp_path / "results", _records(), _env())
    code = ("import sys; from fastformer_bench.report import build_report; "
            f"build_report([{str(results)!r}], {str(tmp_path / 'report')!r}); "
            "assert 'torch' not in sys.modules, 'the report imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert text.index("## Findings") < text.index("## What your process gets") < text.index("## Environment")


def _decision(tmp_path, env=None, **kwargs) -> tuple[list[dict], str]:
    results = write_results(tmp_path / "results", _records(impl="compiled", **kwargs), env or _env())
    summary = build_report([str(results)], str(tmp_path / "report"))
    return summary["decision"], (tmp_path / "report" / "REPORT.md").read_text()


@pytest.mark.parametrize("warm_named", [False, True])
def test_the_decision_is_read_in_the_warm_heap_and_quotes_the_plain_process(tmp_path, warm_named):
    rows, text = _decision(tmp_path, warm_named=warm_named)
    # as many rows as settings: the plain, thp and tcmalloc points make no row of their own, and a point that
    # names warm is the same setting as one that names no condition
    assert len(rows) == 2 and all(r["allocator"] == "warm" for r in rows)
    fwd = next(r for r in rows if r["mode"] == "fwd")
    assert fwd["fastest"] == {"impl": "compiled", "time": 0.04} and fwd["n"] == 65536  # warm's 40 ms, not plain's
    assert fwd["plain"] == {"n": 65536, "batch": fwd["batch"], "width": 256, "heads": fwd["heads"], "columns": 3,
                            "masked": fwd["plain"]["masked"], "time": 0.1, "warm_time": 0.04, "ratio_to_warm": 2.5}
    answer = text.split("## Answer\n\n")[1].split("\n")[0]
    assert "allocator condition `warm`" in answer and "100 ms at N = 65,536 (2.50× warm) for `compiled`" in answer
    decision_table = text.split("## Decision")[1].split("## Findings")[0]
    assert "in a plain process" in decision_table and "100 ms at N = 65,536 (2.50× warm)" in decision_table


def test_the_decision_takes_its_share_against_the_matching_roof_and_says_why_above_100(tmp_path):
    # B·N·D = 2^25: reads 3e8 / 1e10 + writes 1e8 / 5e9 = 0.05 s at the start-of-run roofs, over warm's 0.04 s
    rows, text = _decision(tmp_path, n=131072)
    matching = next(r for r in rows if r["mode"] == "fwd")["roof"]["matching"]
    assert matching["share_median"] == 1.25 and matching["write_method"] == "plain"
    assert "125 % of read 10 GB/s + write 5 GB/s" in text
    assert "the write roof was timed with plain stores" in text  # the reason beside the share above 100 %
    # the same run whose end-of-run roofs read twice as fast: the start was the slow reading, and it says so
    env = {**_env(), "roofs_end": [{**_env()["roofs"][0], "read_bytes_per_s": 2 * READ_BW,
                                    "write_bytes_per_s": 2 * WRITE_BW}]}
    rows, text = _decision(tmp_path / "again", env=env, n=131072)
    matching = next(r for r in rows if r["mode"] == "fwd")["roof"]["matching"]
    assert matching["share_best_median"] == 0.625
    assert "because the roofs read at the run's start were low" in text
    assert "plain stores" not in text.split("## Findings")[0]
