"""The analysis recovers known exponents, crossovers and limits from synthetic results, and rejects bad input."""

from __future__ import annotations

import json

import pytest
from testkit.synthetic_results import CROSS_NAIVE, CROSS_SDPA, WILD_N, synthetic_records, write_results

from fastformer_bench.report import analysis, load, sections
from fastformer_bench.results import ResultsError


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    frame, _runs = load([str(write_results(tmp_path_factory.mktemp("results")))])
    return sections.summarize(frame)


def _pick(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


@pytest.mark.parametrize("impl,expected", [("eager", 1.0), ("reference", 2.0), ("softmax_sdpa", 2.0),
                                           ("softmax_naive", 2.0)])
@pytest.mark.parametrize("width", [64, 256])
def test_time_exponents_are_recovered(summary, impl, expected, width):
    fit = _pick(summary["time_fits"], impl=impl, width=width, mode="fwd", scope="core")
    assert fit["slope"] == pytest.approx(expected, abs=0.05)
    assert fit["ci_low"] <= fit["slope"] <= fit["ci_high"]
    assert fit["n_points"] >= analysis.MIN_FIT_POINTS


def test_memory_exponents_are_recovered(summary):
    assert _pick(summary["memory_fits"], impl="eager", width=64, mode="fwd")["slope"] == pytest.approx(1.0, abs=0.05)
    # B·H·N² weights plus a linear term: close to 2 over N = 128-512
    assert _pick(summary["memory_fits"], impl="reference", width=256, mode="fwd")["slope"] > 1.75


def test_incorrect_point_is_excluded_from_the_fit(summary):
    fit = _pick(summary["time_fits"], impl="eager", width=64, mode="fwd", scope="core")
    assert fit["n_max"] < WILD_N  # the wild 1000 s point at N = 4096 is status incorrect
    assert fit["slope"] == pytest.approx(1.0, abs=0.05)
    bad = summary["correctness"]["incorrect"]
    assert [(b["impl"], b["seq_len"]) for b in bad] == [("eager", WILD_N)]


@pytest.mark.parametrize("baseline,expected", [("softmax_sdpa", CROSS_SDPA), ("softmax_naive", CROSS_NAIVE)])
def test_crossover_against_softmax(summary, baseline, expected):
    row = _pick(summary["crossovers"], impl="eager", baseline=baseline, width=64, mode="fwd", scope="core")
    assert row["outcome"] == "crossed"
    assert row["crossover_n"] == pytest.approx(expected, rel=0.03)
    never = _pick(summary["crossovers"], impl="reference", baseline=baseline, width=64, mode="fwd", scope="core")
    assert never["crossover_n"] is None and never["outcome"] == "never_faster" and never["reason"]


def test_crossing_outcomes():
    assert analysis.crossing([1, 2, 4], [0.5, 0.4, 0.3])["outcome"] == "always_faster"
    assert analysis.crossing([1, 2, 4], [2.0, 1.5, 1.2])["outcome"] == "never_faster"
    assert analysis.crossing([1, 2, 4], [2.0, 0.5, 1.2])["outcome"] == "not_staying_faster"
    # faster at 2, slower at 4, faster again from 8: the crossing that counts is the last one
    got = analysis.crossing([1, 2, 4, 8], [2.0, 0.5, 2.0, 0.5])
    assert got["slower_at_n"] == 4 and got["crossover_n"] == pytest.approx(5.657, rel=1e-3)


def test_large_n_range_rule():
    assert analysis.large_n([1, 2]) is None
    assert analysis.large_n([4, 1, 2]) == [1, 2, 4]
    assert analysis.large_n(range(1, 8)) == [4, 5, 6, 7]
    assert analysis.large_n(range(1, 9)) == [5, 6, 7, 8]


def test_oom_limits(summary):
    ref = _pick(summary["oom"], impl="reference", width=64, mode="fwd", columns=3, scope="core")
    assert (ref["largest_ok_n"], ref["first_oom_n"]) == (512, 1024)
    eager = _pick(summary["oom"], impl="eager", width=64, mode="fwd", columns=3, scope="core")
    assert eager["first_oom_n"] is None and eager["largest_ok_n"] == 2048


def test_flop_counters_and_targets(summary):
    flops = _pick(summary["flop_counters"], impl="softmax_sdpa", mode="fwd", scope="core")
    assert flops["fvcore_ratio"]["median"] == pytest.approx(0.8)
    assert flops["counter_ratio"]["median"] == pytest.approx(0.95)
    assert flops["counter_missing"] == ["aten::_softmax"]
    compiled = _pick(summary["targets"], impl="compiled", width=64, mode="fwd")
    assert not compiled["holds"] and "asymptotic" in compiled["reason"]
    assert compiled["verdict"] == "undecided"  # N^0.63, its interval [0.43, 0.84] reaching 0.8
    eager = _pick(summary["targets"], impl="eager", width=64, mode="fwd")
    assert eager["holds"] and eager["verdict"] == "met"


@pytest.mark.parametrize("slope,ci,verdict", [
    (1.0, (0.9, 1.1), "met"),
    (1.25, (-1.31, 3.80), "undecided"),  # the interval spans the whole target: three N inside the cache
    (0.63, (0.43, 0.84), "undecided"),   # reaches the target: noise could put it there
    (1.40, (1.30, 1.50), "missed"),      # wholly above
    (0.50, (0.40, 0.60), "missed"),      # wholly below
    (1.30, (None, None), "undecided"),   # no interval (two points): nothing excludes the target
])
def test_a_target_is_missed_only_where_the_interval_excludes_it(slope, ci, verdict):
    fit = {"device": "cpu", "dtype": "float32", "mode": "fwd", "scope": "core", "threads": 1, "impl": "eager",
           "batch": 1, "width": 64, "heads": 2, "columns": 3, "masked": False, "n_min": 512, "n_max": 8192,
           "n_values": 3, "fit_range": "top half", "slope": slope, "ci_low": ci[0], "ci_high": ci[1],
           "llc_bytes": 2**25, "inputs_max_bytes": 2**24}
    (row,) = analysis.target_checks([fit], {"eager": {"expected_exponent": [0.8, 1.2]}})
    assert row["verdict"] == verdict and row["holds"] == (verdict == "met")
    text = "\n".join(sections.scaling.verdicts({"targets": [row]}) + sections.scaling.caveats({"targets": [row]}))
    assert ("**Target not met:**" in text) == (verdict == "missed")
    if verdict == "undecided":
        assert "not enough N past the cache to tell (none of its 3 N had inputs past" in text


def test_other_summaries(summary):
    assert _pick(summary["fwd_bwd"], impl="eager", scope="core")["median"] == pytest.approx(3.0, rel=0.01)
    cols = _pick(summary["columns"], impl="eager", mode="fwd")
    assert (cols["c_min"], cols["c_max"]) == (2, 6)
    assert summary["token_budget"]["tokens"] == 65536
    assert _pick(summary["throughput"], impl="eager", mode="fwd", scope="core")["fraction_of_copy"] > 0
    json.dumps(summary, allow_nan=False)  # JSON-ready as it stands


def test_foreign_schema_is_rejected(tmp_path):
    (tmp_path / "points.jsonl").write_text(json.dumps({"schema": 99, "impl": "eager"}) + "\n")
    with pytest.raises(ResultsError, match="schema"):
        load([str(tmp_path)])


def test_garbage_and_missing_results_are_rejected(tmp_path):
    (tmp_path / "points.jsonl").write_text("this is not json\n")
    with pytest.raises(ResultsError):
        load([str(tmp_path)])
    with pytest.raises(ResultsError):
        load([str(tmp_path / "nowhere")])
    with pytest.raises(ResultsError):
        load([])


def test_uninterpretable_record_is_rejected(tmp_path):
    record = synthetic_records()[0]
    write_results(tmp_path / "a", [{**record, "seq_len": "long"}])
    with pytest.raises(ResultsError, match="seq_len"):
        load([str(tmp_path / "a")])
    write_results(tmp_path / "b", [{**record, "masked": "maybe"}])
    with pytest.raises(ResultsError, match="masked"):
        load([str(tmp_path / "b")])


def _timed_record(point: str, samples: list[float], *, attempts: int = 1, rejected=None, status: str = "ok",
                  seq_len: int = 1024, revisits: int | None = None, pressure: float | None = 0.0):
    import numpy as np

    from fastformer_bench.results import new_record

    p20, p50, p80 = (float(v) for v in np.percentile(samples, [20, 50, 80]))
    return new_record(point_id=point, impl="eager", family="additive", device="cpu", dtype="float32", mode="fwd",
                      scope="core", batch=1, seq_len=seq_len, width=64, heads=2, columns=3, masked=False,
                      status=status, time_median=p50, time_p20=p20, time_p80=p80, samples=samples,
                      timing_attempts=attempts, rejected_samples=rejected or [], revisits=revisits,
                      contention={"cpu_pressure": pressure, "cpu_steal": None})


def test_noise_counts_the_spread_target_and_the_shift_from_keeping_a_quiet_window():
    import pandas as pd

    from fastformer_bench.report.noise import noise

    tight = [2e-3 * (1 + 0.002 * k) for k in range(10)]            # spread about 1 %: within 5 %
    noisy = [5e-3 * (1 + 0.02 * k) for k in range(10)]             # spread about 10 %: not within
    loud = [[6e-3 * (1 + 0.1 * k) for k in range(10)]] * 2         # the two windows it replaced
    fast = [0.5e-3 * (1 + 0.1 * k) for k in range(10)]             # below 1 ms: not counted against the target
    wrong = [9e-3 * (1 + 0.5 * k) for k in range(10)]              # incorrect: never counted
    frame = pd.DataFrame([_timed_record("a", tight), _timed_record("b", noisy, attempts=3, rejected=loud,
                                                                   seq_len=2048, revisits=1),
                          _timed_record("c", fast, pressure=0.4), _timed_record("d", wrong, status="incorrect"),
                          _timed_record("e", tight, seq_len=4096, pressure=None)])
    got = noise(frame)
    (cpu,) = got["devices"]
    assert (cpu["n"], cpu["above_floor"], cpu["within_target"]) == (4, 3, 2)
    assert (cpu["remeasured"], cpu["max_windows"], cpu["revisited"]) == (1, 3, 1)
    # the noisy point is named, with its spread, and so is the point choosing a quiet window moved most
    ((label, spread),) = cpu["outside_target"]
    assert "N=2048" in label and 0.09 < spread < 0.11
    assert "N=2048" in cpu["kept_vs_pooled_min_point"]
    # a point timed while another task waited for the CPU is named even though its spread is fine
    assert cpu["pressure_measured"] == 3 and cpu["contended"] == [["eager fwd core N=1024 D=64 C=3", 0.4]]
    pooled = sorted(noisy + loud[0] + loud[1])
    expected = float(pd.Series(noisy).median() / pd.Series(pooled).median())
    assert cpu["kept_vs_pooled"] == pytest.approx(expected, rel=1e-3) and expected < 1
    # the report's caveat says all of it in words: counts, the revisit, and the named point with its spread
    from fastformer_bench.report.sections.noise import device_lines

    (line,) = device_lines(got)
    assert line.startswith("cpu: 2 of 3 points above 1 ms are within the 5% p20-p80 target")
    assert "more than 5% of the timing of: eager fwd core N=1024 D=64 C=3 (40%)" in line
    assert "1 of them was still noisy" in line and "eager fwd core N=2048 D=64 C=3 (9.9%)" in line
