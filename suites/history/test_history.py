"""Performance history: filing runs per machine, and step detection that finds real steps and not noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testkit.imports import loaded_after
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench import history

ROOT = Path(__file__).resolve().parents[2]


def _noisy(n: int, rng: np.random.Generator, step_at: int | None = None, step: float = 1.05,
           noise: float = 0.01) -> list[float]:
    values = 1e-3 * np.exp(rng.normal(0, noise, n))
    if step_at is not None:
        values[step_at:] *= step
    return values.tolist()


COMMITS = [f"{i:040x}" for i in range(24)]


def test_a_five_percent_step_amid_noise_is_found_at_its_commit():
    found = history.steps(_noisy(24, np.random.default_rng(1), step_at=13), COMMITS)
    assert [s.commit for s in found] == [COMMITS[13]]
    assert found[0].ci_low < 1.05 < found[0].ci_high and found[0].ci_low > 1.02


def test_a_slow_drift_of_small_steps_is_found_where_each_gate_would_pass():
    # five 4 % steps, each passing a 5 % gate on its own
    values = _noisy(30, np.random.default_rng(2), noise=0.005)
    for at in (5, 10, 15, 20, 25):
        values[at:] = [v * 1.04 for v in values[at:]]
    found = history.steps(values, COMMITS + [f"{i:040x}" for i in range(24, 30)])
    assert len(found) >= 3 and all(s.ratio > 1.02 for s in found)


def test_flat_histories_rarely_raise_a_step():
    rng = np.random.default_rng(3)
    alarms = sum(bool(history.steps(_noisy(24, rng), COMMITS)) for _ in range(100))
    assert alarms <= 5, alarms


def test_a_step_inside_the_margin_is_not_reported():
    assert history.steps(_noisy(24, np.random.default_rng(4), step_at=12, step=1.01, noise=0.001), COMMITS) == []


# -- files and the command line ------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", "history", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _filed_run(tmp_path: Path, index: int, factor: float, **env) -> Path:
    records = [r for r in synthetic_records() if r["impl"] == "eager" and r["seq_len"] == 1024]
    for r in records:
        r["time_median"] *= factor
        r["time_p20"] *= factor
        r["time_p80"] *= factor
    return write_results(tmp_path / f"run{index}", records,
                         {**run_env(), "git_commit": COMMITS[index], "run_id": f"r{index}", **env})


def test_history_add_and_show_find_a_step_through_the_cli(tmp_path):
    store, rng = tmp_path / "history", np.random.default_rng(5)
    for index in range(12):
        factor = float(np.exp(rng.normal(0, 0.005))) * (1.10 if index >= 7 else 1.0)
        run = _filed_run(tmp_path, index, factor)
        if index:
            history.add(run, store)  # in-process: each CLI call costs an interpreter start
        else:
            done = _cli("add", str(run), "--history", str(store))
            assert done.returncode == 0 and "filed" in done.stdout, done.stderr
    # commit times are unknown here (synthetic commits): filing order is history order
    shown = _cli("show", "--history", str(store), "--out", str(tmp_path / "out"))
    assert shown.returncode == 0, shown.stderr
    summary = json.loads((tmp_path / "out" / "history.json").read_text())
    machine, = summary["machines"]
    assert machine["runs"] == 12 and machine["steps"]
    assert {s["commit"] for s in machine["steps"]} == {COMMITS[7]}
    assert (tmp_path / "out" / machine["figure"]).exists()
    assert COMMITS[7][:12] in (tmp_path / "out" / "HISTORY.md").read_text()


def test_history_bad_inputs_exit_2_in_one_line(tmp_path):
    missing = _cli("add", str(tmp_path / "nope"), "--history", str(tmp_path / "h"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    empty = _cli("show", "--history", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert empty.returncode == 2 and "no history" in empty.stderr
    store = tmp_path / "h2"
    for index, bandwidth in enumerate([2e10, 2e10, 3e10]):
        history.add(_filed_run(tmp_path, index, 1.0, copy_bytes_per_s={"cpu": bandwidth}), store)
    differing = _cli("show", "--history", str(store), "--out", str(tmp_path / "o2"))
    assert differing.returncode == 2 and "--normalize" in differing.stderr
    assert _cli("show", "--history", str(store), "--out", str(tmp_path / "o3"), "--normalize").returncode == 0


def test_runs_of_different_machines_are_filed_apart(tmp_path):
    store = tmp_path / "h"
    history.add(_filed_run(tmp_path, 0, 1.0), store)
    history.add(_filed_run(tmp_path, 1, 1.0, cpu_model="Another CPU"), store)
    assert len(history.entries(store)) == 2


def test_one_cpu_name_over_two_generations_makes_two_trends(tmp_path):
    """The VM's "AMD EPYC" was two parts (docs/gate.md §4); a run recording its CPU's signature and caches is
    filed by them, and one that recorded neither keeps the folder runs were filed in before."""
    store = tmp_path / "h"
    unrecorded = history.add(_filed_run(tmp_path, 0, 1.0), store).parent
    zen3 = {"cpu_signature": "AuthenticAMD family 25 model 1 stepping 1", "cpu_caches_bytes": {"L2": 2**19}}
    zen4 = {"cpu_signature": "AuthenticAMD family 25 model 17 stepping 1", "cpu_caches_bytes": {"L2": 2**20}}
    first = history.add(_filed_run(tmp_path, 1, 1.0, **zen3), store).parent
    again = history.add(_filed_run(tmp_path, 2, 1.0, **zen3), store).parent
    other = history.add(_filed_run(tmp_path, 3, 1.0, **zen4), store).parent
    assert first == again and len({unrecorded, first, other}) == 3
    assert unrecorded.name.startswith("cpu-Synthetic-CPU-2-")  # the name runs before had: nothing re-filed
    entries = history.entries(store)
    assert sorted(len(filed) for filed in entries.values()) == [1, 1, 2]
    (zen3_entries,) = [filed for filed in entries.values() if len(filed) == 2]
    history.check_one_machine(zen3_entries, normalize=False)
    mixed = [zen3_entries[0], {**zen3_entries[1], "fingerprint": {**zen3_entries[1]["fingerprint"],
                                                                  "cpu_caches": "L2 1 MiB"}}]
    with pytest.raises(ValueError, match="different machines"):
        history.check_one_machine(mixed, normalize=False)


@pytest.mark.parametrize("values", [[1.0, 1.0, 1.0], []])
def test_short_histories_have_no_steps(values):
    assert history.steps(values, COMMITS[:len(values)]) == []


def _instruction_report(path: Path, count: float, mode: str = "instructions") -> Path:
    rows = [{"label": "eager cpu float32 fwd B=1 N=64 D=32 H=2 C=3", "baseline": count, "candidate": count,
             "ratio": 1.0, "verdict": "same", "fails": False},
            {"label": "broken point", "baseline": None, "candidate": None, "ratio": None, "verdict": "broken"}]
    path.write_text(json.dumps({"mode": mode, "passed": True, "rows": rows}))
    return path


def test_instruction_count_history_finds_a_three_percent_step(tmp_path):
    store = tmp_path / "h"
    for index in range(8):
        count = 740_000 * (1 + 0.0005 * (index % 3)) * (1.03 if index >= 5 else 1.0)
        history.add(_instruction_report(tmp_path / f"gate{index}.json", count), store, commit=COMMITS[index])
    (machine, filed), = history.entries(store).items()
    assert machine.startswith("cpu-instruction-counts") and len(filed) == 8
    line, = history.series(filed).values()
    assert line["unit"] == "instructions" and len(line["median"]) == 8  # the broken point is not filed
    found = history.steps(line["median"], line["commits"])
    assert [s.commit for s in found] == [COMMITS[5]] and 1.02 < found[0].ratio < 1.04


def test_filing_a_run_loads_neither_torch_nor_a_plotting_library():
    assert loaded_after("from fastformer_bench import history", ("torch", "matplotlib", "pandas")) == []


def test_show_is_the_function_even_after_its_module_was_imported():
    import fastformer_bench.history.render  # noqa: F401  (a submodule named show would replace the function)

    assert callable(history.show) and history.show.__module__ == "fastformer_bench.history.render"


def test_a_wall_time_gate_report_is_not_an_instruction_history(tmp_path):
    report = _instruction_report(tmp_path / "wall.json", 1.0, mode="wall_ab")
    done = _cli("add", str(report), "--commit", COMMITS[0], "--history", str(tmp_path / "h"))
    assert done.returncode == 2 and "not the --json report of an instruction-count gate" in done.stderr


def test_normalize_scales_only_the_points_whose_data_outgrow_the_cache(tmp_path):
    # eager at N = 512 and 2048, width 64, batch 2: bytes_min 1 MiB and 4 MiB; a 2 MiB cache puts one in, one past it
    store = tmp_path / "history"
    for index, bandwidth in enumerate((10e9, 20e9)):
        records = [r for r in synthetic_records() if r["impl"] == "eager" and r["width"] == 64
                   and r["seq_len"] in (512, 2048) and r["mode"] == "fwd" and r["scope"] == "core"
                   and r["columns"] == 3 and r["status"] == "ok"]
        assert {r["bytes_min"] for r in records} == {2.0**20, 4.0 * 2**20}
        run = write_results(tmp_path / f"run{index}", records,
                            {**run_env(), "git_commit": COMMITS[index], "run_id": f"r{index}",
                             "copy_bytes_per_s": {"cpu": bandwidth}, "last_level_cache_bytes": 2 * 2**20})
        history.add(run, store)
    filed = next(iter(history.entries(store).values()))
    raw, scaled = history.series(filed), history.series(filed, normalize=True)
    for label, line in raw.items():
        factor = scaled[label]["median"][1] / line["median"][1]
        # the second run had twice the bandwidth: only the point past the cache is scaled (by 2), in-cache is not
        assert factor == pytest.approx(2.0 if "N=2048" in label else 1.0), label


def test_a_commit_filed_twice_counts_once_with_its_better_run(tmp_path):
    store = tmp_path / "history"
    for index, (commit, factor) in enumerate([(0, 1.0), (1, 1.5), (1, 1.1), (2, 1.0)]):
        history.add(_filed_run(tmp_path, index, factor, git_commit=COMMITS[commit]), store)
    filed = next(iter(history.entries(store).values()))
    assert len(filed) == 4
    for line in history.series(filed).values():
        assert line["commits"] == COMMITS[:3]  # one value per commit, in history order
        first, repeated, _ = line["median"]
        assert repeated == pytest.approx(1.1 * first)  # the less disturbed of the two runs, not their mean or last
