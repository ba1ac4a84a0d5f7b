"""The regression gate: its statistics on synthetic samples, its refusals, and end to end on this machine —
an unchanged candidate passes and a deliberately slowed one fails, in wall time (A/B) and in instruction counts.

The end-to-end tests compare implementations in one gate run (``--impl eager,eager --candidate-impl
eager,<slowed>``): the eager/eager rows are the unchanged candidate, the other row the slowed one, measured in
the same interleaved job — one gate run instead of two keeps the file within CI's time.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastformer_bench.gate import ab, sides
from fastformer_bench.gate import compare as gate_compare
from fastformer_bench.gate import instructions as gate_instructions
from fastformer_bench.gate import stats as gate_stats
from fastformer_bench.gate import table as gate_table
from fastformer_bench.gate.ab import Worker
from fastformer_bench.tools import gate_selftest, slowed_impls
from fastformer_bench.tools.gate_selftest import plugin_env, snapshot
from fastformer_bench.tools.slowed_impls import calls_for_exact_work, slowdown_name

REPO = Path(__file__).resolve().parents[2]
TINY = ["--seq-len", "64", "--width", "32", "--heads", "2", "--batch", "1"]
#: the last revision before the gate became a package (no point.py, no measure/host.py): an older baseline
OLD_REV = "c13d48a"


# -- statistics ------------------------------------------------------------------------------------------------
def _noisy(center: float, n: int, spread: float, seed: int) -> list[float]:
    return list(center * (1 + spread * np.random.default_rng(seed).standard_normal(n)))


def test_large_ratio_without_significance_passes():
    base, cand = [1.0, 0.6, 1.4], [1.3, 0.7, 1.5]
    result = gate_stats.compare_samples(base, cand)
    assert result.ratio > 1.1 and result.p_value >= gate_stats.DEFAULT_ALPHA
    assert result.verdict == gate_stats.SAME


def test_a_significant_slowdown_inside_the_margin_passes():
    result = gate_stats.compare_samples(_noisy(1.0, 60, 0.002, 1), _noisy(1.01, 60, 0.002, 2))
    assert result.p_value < 1e-6 and result.ci_low > 1.0 and result.ci_high < 1 + gate_stats.DEFAULT_MARGIN
    assert result.verdict == gate_stats.SAME


def test_a_five_percent_slowdown_with_a_tight_interval_is_caught():
    # the old rule (ratio > 1.10) let exactly this through: a commit calling every softmax twice, 1.096x slower
    result = gate_stats.compare_samples(_noisy(1.0, 40, 0.01, 1), _noisy(1.05, 40, 0.01, 2))
    assert result.ci_low > 1 + gate_stats.DEFAULT_MARGIN and result.verdict == gate_stats.REGRESSION
    wide = gate_stats.compare_samples(_noisy(1.0, 8, 0.2, 1), _noisy(1.05, 8, 0.2, 2))
    assert wide.ci_low <= 1 + gate_stats.DEFAULT_MARGIN and wide.verdict == gate_stats.SAME  # noise, not evidence


def test_large_and_significant_slowdown_is_a_regression_with_its_interval():
    result = gate_stats.compare_samples(_noisy(1.0, 40, 0.05, 3), _noisy(1.3, 40, 0.05, 4))
    assert result.verdict == gate_stats.REGRESSION and result.regressed
    assert result.ci_low < result.ratio < result.ci_high and result.ci_low > 1.1
    faster = gate_stats.compare_samples(_noisy(1.0, 40, 0.05, 5), _noisy(0.7, 40, 0.05, 6))
    assert faster.verdict == gate_stats.FASTER


def test_a_points_resolution_is_the_slowdown_its_noise_lets_the_rule_flag():
    # Unchanged code (the same samples, reordered: ratio exactly 1) gives the interval's relative width; the same
    # candidate made slower by just more than that slowdown is flagged, by just less it is not.
    base = _noisy(1.0, 80, 0.03, 7)
    unchanged = gate_stats.compare_samples(base, base[::-1])
    resolution = gate_stats.flagged_from(unchanged.ratio, unchanged.ci_low)
    assert unchanged.ratio == 1 and resolution == pytest.approx((1 + gate_stats.DEFAULT_MARGIN) / unchanged.ci_low)
    assert 1.02 < resolution < 1.1
    above = gate_stats.compare_samples(base, [t * resolution * 1.005 for t in base[::-1]])
    below = gate_stats.compare_samples(base, [t * resolution * 0.995 for t in base[::-1]])
    assert above.verdict == gate_stats.REGRESSION and below.verdict == gate_stats.SAME
    assert gate_stats.flagged_from(1.0, None) is None


def test_the_time_gate_says_what_slowdown_it_could_have_seen():
    from fastformer_bench.gate import resolution

    sides = {(n,): gate_compare.Side(label=f"p{n}", status="ok", samples=tuple(_noisy(1.0, 60, spread, n)))
             for n, spread in ((1, 0.01), (2, 0.05))}
    rows = gate_compare.compare(sides, {k: gate_compare.Side(label=v.label, status="ok", samples=v.samples[::-1])
                                        for k, v in sides.items()})
    quiet, noisy = (r.flagged_from for r in rows)
    assert 1.02 < quiet < noisy  # more noise, a larger slowdown before anything is flagged
    line = resolution(rows)
    assert f"from about {100 * ((quiet + noisy) / 2 - 1):.1f} % slower" in line
    assert f"least sensitive {100 * (noisy - 1):.1f} %" in line
    assert resolution([]) == ""


def _rounds(biases: list[float], n: int, spread: float, seed: int) -> list[list[float]]:
    """Rounds of ``n`` samples each, round i centred on 1 + biases[i]: a process's own luck, then sample noise."""
    return [_noisy(1 + bias, n, spread, seed + i) for i, bias in enumerate(biases)]


def _sides(rounds: list[list[float]]) -> dict[tuple, gate_compare.Side]:
    return {("p",): gate_compare.Side(label="p", status="ok", samples=tuple(t for r in rounds for t in r),
                                      rounds=tuple(tuple(r) for r in rounds))}


def test_paired_rounds_count_the_process_to_process_noise_that_pooled_samples_miss():
    # Unchanged code whose processes differ by a few percent each (memory layout): three of the candidate's four
    # processes happened to be 3.5-4.5 % slow, one 3 % fast. Pooled, 60 of its 80 tight samples sit above every
    # baseline sample, which looks like strong evidence of a 3.6 % slowdown; round by round, four observations
    # that disagree by 7 % are not.
    base = _rounds([0.0] * 4, 20, 0.003, 10)
    cand = _rounds([0.035, 0.04, 0.045, -0.03], 20, 0.003, 40)
    pooled = gate_stats.compare_samples([t for r in base for t in r], [t for r in cand for t in r])
    assert pooled.verdict == gate_stats.REGRESSION  # what the gate said before it paired rounds
    row, = gate_compare.compare(_sides(base), _sides(cand))
    assert row.verdict == gate_stats.SAME and row.ci_low < 1 < 1 + gate_stats.DEFAULT_MARGIN < row.ci_high
    assert row.note.startswith("4 paired rounds")
    assert len(row.round_ratios) == 4 and row.round_ratios[0] == pytest.approx(1.035, abs=0.003)
    assert row.ratio == pytest.approx(float(np.exp(np.mean(np.log(row.round_ratios)))))


def test_paired_rounds_catch_a_five_percent_slowdown_when_the_rounds_agree():
    biases = [0.01, -0.01, 0.0, 0.015, -0.005, 0.0, 0.01, -0.01, 0.005, -0.015]  # +-1 % per process
    base = _rounds(biases, 10, 0.01, 1)
    cand = _rounds([1.05 * (1 + b) - 1 for b in biases[::-1]], 10, 0.01, 60)
    row, = gate_compare.compare(_sides(base), _sides(cand))
    assert row.verdict == gate_stats.REGRESSION and 1 + gate_stats.DEFAULT_MARGIN < row.ci_low < 1.05 < row.ci_high
    faster, = gate_compare.compare(_sides(cand), _sides(base))
    assert faster.verdict == gate_stats.FASTER


def test_rounds_are_paired_only_when_both_sides_have_enough_of_them():
    base, cand = _rounds([0.0] * 4, 10, 0.01, 1), _rounds([0.1] * 4, 10, 0.01, 20)
    stored, = gate_compare.compare(_sides(base[:1]), _sides(cand[:1]))  # a stored baseline: one round each
    assert stored.round_ratios is None and stored.note.startswith("10 vs 10 samples")
    uneven, = gate_compare.compare(_sides(base), _sides(cand[:3]))
    assert uneven.round_ratios is None and uneven.verdict == gate_stats.REGRESSION
    with pytest.raises(ValueError, match="same number of rounds"):
        gate_stats.measure_rounds(base, cand[:3])
    with pytest.raises(ValueError, match="at least 3"):
        gate_stats.measure_rounds(base[:2], cand[:2])
    # every round's ratio exactly equal (x2 is exact in binary): no spread, so the interval is the ratio itself
    exact = gate_stats.measure_rounds(base, [[t * 2 for t in r] for r in base])
    assert exact.ratio == exact.ci_low == exact.ci_high == 2 and exact.p_value == 0 and exact.p_faster == 1
    assert gate_stats.settle([exact])[0].verdict == gate_stats.REGRESSION
    unchanged = gate_stats.measure_rounds(base, base)
    assert unchanged.ratio == 1 and unchanged.p_value == unchanged.p_faster == 1
    assert gate_stats.settle([unchanged])[0].verdict == gate_stats.SAME


def test_two_pairings_with_one_candidate_keep_their_rounds_apart():
    # --impl eager,softmax_sdpa --candidate-impl stream,stream: two comparisons whose candidate records share an
    # implementation. Keyed by the candidate alone, both landed under one key: 2R candidate rounds against R, so
    # the rounds could not be paired and both rows were compared against a mix of two sessions' samples.
    from types import SimpleNamespace

    from fastformer_bench.gate import modes
    from fastformer_bench.problem import Problem

    args = SimpleNamespace(impl="eager,softmax_sdpa", candidate_impl="stream,stream")
    base_impls, _, pairs = modes.impls(args)
    points = modes._points([Problem(impl=i, batch=1, seq_len=64, width=32, heads=2) for i in base_impls], pairs)
    rounds = {"baseline": [], "candidate": []}
    for number in range(4):
        for side in rounds:
            rounds[side].append([{**point[side], "status": "ok", "pair": point.get("pair"),
                                  "samples": [1.0 + 0.01 * number] * 3} for point in points])
    rows = gate_compare.compare(gate_compare.pool(rounds["baseline"]), gate_compare.pool(rounds["candidate"]),
                                pairs=pairs)
    assert len(rows) == 2 and all(len(row.round_ratios) == 4 for row in rows), rows
    # a pairing named twice is one comparison, measured once
    assert modes.impls(SimpleNamespace(impl="eager,eager", candidate_impl="stream,stream"))[2] == [("eager", "stream")]


def test_the_gate_measures_each_implementation_at_its_own_points_of_the_preset():
    # The gate preset times the linear implementations at N = 4096 and the quadratic ones at 1024. Replacing the
    # impl axis in every block put SDPA at N = 4096 (0.4 s a call) and eager at 1024 (where dispatch luck made its
    # rounds 8.5 % noisy); a plugin the preset does not name still gets every point.
    from fastformer_bench import cli, impls
    from fastformer_bench.gate import modes
    from fastformer_bench.presets import expand, load

    args = cli.build_parser().parse_args(["gate", "--baseline-rev", "HEAD"])
    everything, _ = expand(load("gate"))
    sizes = {p.impl: p.seq_len for p in everything}
    found = modes._problems(args, "gate", ["softmax_sdpa", "eager"])[0]
    assert [(p.impl, p.seq_len) for p in found] == [("softmax_sdpa", sizes["softmax_sdpa"]),
                                                   ("eager", sizes["eager"])]
    assert sizes["softmax_sdpa"] != sizes["eager"]  # else this test shows nothing
    with impls.registered(impls.Impl(name="plug", family=impls.ADDITIVE, fn=lambda x, w, mask=None: x[0],
                                     description="a plugin")):
        plugged = modes._problems(args, "gate", ["plug"])[0]
    assert sorted(p.seq_len for p in plugged) == sorted({p.seq_len for p in everything})


def test_an_incorrect_candidate_is_never_timed_in_any_round(tmp_path, test_impls):
    # Correctness is checked in the first round only (the reference at N = 4096 took most of a round); a point
    # that failed it there must stay failed and untimed in every later round, not be timed unchecked.
    params = {"impl": "eager", "batch": 1, "seq_len": 64, "width": 32, "heads": 2}
    points = [{"baseline": params, "candidate": {**params, "impl": "test_wrong"}, "pair": "eager>test_wrong"},
              {"baseline": params, "candidate": params}]
    # No thread count: a gate of one claims its CPUs for the process's lifetime (cpu_claims.claim_cpus), and this
    # process is pytest's, whose later tests need both CPUs of a 2-core machine free
    settings = {"warmup_s": 0.01, "min_time_s": 0.02, "min_samples": 3, "max_samples": 5}
    found = ab.interleaved({"baseline": REPO, "candidate": REPO}, points, settings, 3, tmp_path)
    wrong = [rnd[0] for rnd in found["candidate"]]
    assert all(r["status"] == "incorrect" and not r.get("samples") for r in wrong), wrong
    assert all(rnd[1]["status"] == "ok" and rnd[1]["samples"] for side in found.values() for rnd in side), found
    assert "max_rel_err" in found["candidate"][0][1] and "max_rel_err" not in found["candidate"][2][1]
    # the sides start in alternating order, and each record says whether its side started first
    assert [rnd[1]["started_first"] for rnd in found["candidate"]] == [False, True, False]
    assert [rnd[1]["started_first"] for rnd in found["baseline"]] == [True, False, True]
    # Warm-up rounds are measured (the first one checks) and not returned: the check's error is not in the
    # counted rounds, the incorrect point stays refused in them
    found = ab.interleaved({"baseline": REPO, "candidate": REPO}, points, settings, 2, tmp_path / "w", warmup=1)
    assert [len(side) for side in found.values()] == [2, 2]
    assert all(rnd[0]["status"] == "incorrect" and not rnd[0].get("samples") for rnd in found["candidate"])
    assert all(rnd[1]["samples"] and "max_rel_err" not in rnd[1] for side in found.values() for rnd in side)


def test_a_round_with_a_zero_median_is_not_compared_rather_than_crashing_the_gate():
    base, cand = _rounds([0.0] * 3, 5, 0.01, 1), _rounds([0.0] * 3, 5, 0.01, 9)
    cand[1] = [0.0] * 5
    result = gate_stats.measure_rounds(base, cand)
    assert result.ratio is None and result.ci_low is None
    row, = gate_compare.compare(_sides(base), _sides(cand))
    assert row.ratio is None and row.verdict == gate_compare.NOT_COMPARED and not row.fails
    assert "zero" in row.note
    pooled, = gate_compare.compare(_sides(base[:1]), _sides([[0.0] * 5]))  # the pooled estimate, likewise
    assert pooled.verdict == gate_compare.NOT_COMPARED
    # a point without a ratio stays out of the false-discovery group: the other point's q is its own p
    two = {**_sides(base), ("q",): gate_compare.Side(label="q", status="ok", samples=(1.0,) * 9,
                                                     rounds=((1.0,) * 3,) * 3)}
    cand_two = {**_sides(cand), ("q",): gate_compare.Side(label="q", status="ok", samples=(2.0,) * 9,
                                                          rounds=((2.0,) * 3,) * 3)}
    zero, doubled = gate_compare.compare(two, cand_two)
    assert doubled.verdict == gate_stats.REGRESSION and doubled.q_value == 0.0
    # rounds that agree to the last bit or two: no spread, no precision-loss warning from the t test
    near = gate_stats.measure_rounds(base, [[t * 1.1 * (1 + i * 1e-15) for t in r] for i, r in enumerate(base)])
    assert near.ci_low == near.ci_high == near.ratio


def _follow_up_gate(monkeypatch, round_ratio, rounds=12, max_rounds=24, margin=0.02):
    """modes._follow_up over a fake ab.interleaved: point i's candidate round r measures round_ratio(i, r) times
    the baseline's 1.0. Returns (every interleaved call's point indices, rounds and check flag; the rows; labels
    followed up with their round counts)."""
    from types import SimpleNamespace

    from fastformer_bench.gate import modes

    points = [{"baseline": {"seq_len": n}, "candidate": {"seq_len": n}} for n in (64, 128, 256)]
    calls, counter = [], {}

    def fake(trees, pts, settings, rounds_now, workdir, *, cpus=None, check=True, label="round"):
        calls.append(([p["baseline"]["seq_len"] for p in pts], rounds_now, check))
        found = {"baseline": [], "candidate": []}
        for _ in range(rounds_now):
            for name in found:
                found[name].append([])
            for point in pts:
                i = [q["baseline"]["seq_len"] for q in points].index(point["baseline"]["seq_len"])
                r = counter[i] = counter.get(i, -1) + 1
                for name, scale in (("baseline", 1.0), ("candidate", round_ratio(i, r))):
                    found[name][-1].append(_record(seq_len=point[name]["seq_len"],
                                                   samples=[scale * t for t in (0.99, 1.0, 1.01)]))
        return found

    monkeypatch.setattr(ab, "interleaved", fake)
    found = fake({}, points, {}, rounds, None)
    args = SimpleNamespace(rounds=rounds, max_rounds=max_rounds, margin=margin, alpha=0.05)
    followed = modes._follow_up(args, {"baseline": REPO, "candidate": REPO}, points, None, {}, found, Path("."), None)
    rows = gate_compare.compare(gate_compare.pool(found["baseline"]), gate_compare.pool(found["candidate"]),
                                margin=margin)
    return calls[1:], rows, followed


def test_only_an_undecided_point_is_measured_in_follow_up_rounds_until_it_is_decided(monkeypatch):
    # Point 0 is unchanged, point 2 is 25 % slower: both decided in 12 rounds. Point 1 is 4 % slower with
    # rounds alternating 1.00 / 1.08 (a layout's luck): at 12 rounds its interval reaches below 1.02 and it passes;
    # the follow-up measures it alone, four rounds at a time, without checking it again, until it is flagged.
    def ratio(i, r):
        return (1.0 + 0.001 * (r % 3 - 1), 1.0 + 0.08 * (r % 2) - 0.004 * (r % 5 == 0), 1.25)[i]

    calls, rows, followed = _follow_up_gate(monkeypatch, ratio)
    assert calls and all(points == [128] and rounds == 4 and check is False for points, rounds, check in calls)
    unchanged, slowed, large = rows
    assert slowed.verdict == gate_stats.REGRESSION, slowed
    assert len(slowed.round_ratios) == 12 + 4 * len(calls) <= 24
    assert followed == {slowed.label: 4 * len(calls)}
    assert unchanged.verdict == gate_stats.SAME and len(unchanged.round_ratios) == 12
    assert large.verdict == gate_stats.REGRESSION and len(large.round_ratios) == 12
    # at 12 rounds alone it passed: the follow-up is what caught it
    only12 = gate_compare.compare(*(_sides([[ratio(1, r) * t for t in (0.99, 1.0, 1.01)] for r in range(12)]
                                           if side else [[0.99, 1.0, 1.01]] * 12) for side in (0, 1)))
    assert only12[0].verdict == gate_stats.SAME and only12[0].ratio > 1.02


def test_follow_up_rounds_stop_at_max_rounds_and_are_off_at_max_rounds_equal_to_rounds(monkeypatch):
    # A point whose rounds swing 0.96 / 1.12 stays undecided: measured up to --max-rounds in all, never beyond.
    def swinging(i, r):
        return 1.0 if i != 1 else (0.96, 1.12)[r % 2]

    calls, rows, followed = _follow_up_gate(monkeypatch, swinging, max_rounds=18)
    assert [rounds for _, rounds, _ in calls] == [4, 2]
    assert len(rows[1].round_ratios) == 18 and rows[1].verdict == gate_stats.SAME
    calls, rows, followed = _follow_up_gate(monkeypatch, swinging, max_rounds=12)
    assert calls == [] and followed == {} and len(rows[1].round_ratios) == 12


def test_max_rounds_below_rounds_is_refused_and_defaults_to_twice_rounds():
    from fastformer_bench import cli

    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "gate", "--baseline-rev", "HEAD",
                           "--rounds", "6", "--max-rounds", "5"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "--max-rounds (5) cannot be less than --rounds (6)" in done.stderr
    assert done.stderr.count("\n") == 1
    done = subprocess.run([sys.executable, "-m", "fastformer_bench", "gate", "--baseline-rev", "HEAD",
                           "--warmup-rounds", "-1"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "--warmup-rounds must be at least 0, got -1" in done.stderr
    from fastformer_bench.commands import gate

    args = cli.build_parser().parse_args(["gate", "--baseline-rev", "HEAD", "--rounds", "6"])
    gate._check(args)
    assert args.max_rounds == 12


def test_the_start_order_is_a_term_of_the_estimate_so_its_swing_does_not_widen_the_interval():
    # A true 5 % slowdown whose rounds swing +-4 % with the side started first (the order alternates by round):
    # as plain rounds the swing is scatter and the interval reaches below 1.02; with the order as a term the
    # estimate is the midpoint of the two orders' means and the interval is the scatter around them.
    rng = np.random.default_rng(3)
    first = [number % 2 == 1 for number in range(12)]  # the candidate starts first in odd rounds
    ratios = [1.05 * (1.04 if f else 0.96) * float(np.exp(rng.normal(0, 0.01))) for f in first]
    base = [[1.0, 1.0, 1.0] for _ in ratios]
    cand = [[r] * 3 for r in ratios]
    plain = gate_stats.measure_rounds(base, cand)
    ordered = gate_stats.measure_rounds(base, cand, candidate_first=first)
    assert plain.ci_low < 1.02 < ordered.ci_low < 1.05 < ordered.ci_high
    logs = np.log(ratios)
    midpoint = (logs[np.array(first)].mean() + logs[~np.array(first)].mean()) / 2
    assert ordered.ratio == pytest.approx(float(np.exp(midpoint)))
    assert ordered.p_value < plain.p_value and ordered.p_value + ordered.p_faster == pytest.approx(1)
    # unbalanced orders: still the midpoint, not the mean over rounds
    few = gate_stats.measure_rounds(base[:7], cand[:7], candidate_first=first[:7])
    sub = logs[:7]
    mask = np.array(first[:7])
    assert few.ratio == pytest.approx(float(np.exp((sub[mask].mean() + sub[~mask].mean()) / 2)))
    # an order seen in fewer than two rounds, or no order at all: plain t over rounds
    lone = [True] + [False] * 11
    assert gate_stats.measure_rounds(base, cand, candidate_first=lone).ci_low == pytest.approx(plain.ci_low)
    # through pool and compare: records saying which side started first
    def records(side_ratio, cand_side):
        return [[_record(samples=[side_ratio[i]] * 3, started_first=(first[i] if cand_side else not first[i]))]
                for i in range(12)]
    row, = gate_compare.compare(gate_compare.pool(records([1.0] * 12, False)),
                                gate_compare.pool(records(ratios, True)))
    assert row.ci_low == pytest.approx(ordered.ci_low) and row.verdict == gate_stats.REGRESSION


def test_a_gate_round_keeps_its_samples_apart_from_the_other_rounds():
    side, = gate_compare.pool([[_record(samples=[1.0, 1.1])], [_record(samples=[2.0])]]).values()
    assert side.rounds == ((1.0, 1.1), (2.0,)) and side.samples == (1.0, 1.1, 2.0)


def test_the_false_discovery_rate_is_controlled_across_points():
    # One point with p just under alpha among many unchanged ones: alone it would count, in a gate of 20 it is
    # what chance gives one point in twenty.
    edge = gate_stats.Comparison(ratio=1.06, ci_low=1.03, ci_high=1.09, p_value=0.03, verdict="", p_faster=0.97)
    null = gate_stats.Comparison(ratio=1.0, ci_low=0.98, ci_high=1.02, p_value=0.5, verdict="", p_faster=0.5)
    assert gate_stats.settle([edge])[0].verdict == gate_stats.REGRESSION
    settled = gate_stats.settle([edge] + [null] * 19)
    assert settled[0].verdict == gate_stats.SAME and settled[0].q_value == pytest.approx(0.5)
    strong = gate_stats.Comparison(ratio=1.2, ci_low=1.1, ci_high=1.3, p_value=1e-6, verdict="", p_faster=1.0)
    assert gate_stats.settle([strong] + [null] * 19)[0].verdict == gate_stats.REGRESSION


def test_instruction_counts_use_a_plain_percentage():
    assert gate_stats.compare_counts(1e6, 1.02e6).verdict == gate_stats.REGRESSION
    assert gate_stats.compare_counts(1e6, 1.005e6).verdict == gate_stats.SAME
    assert gate_stats.compare_counts(1e6, 1.005e6, percent=0.1).verdict == gate_stats.REGRESSION


def test_instruction_layouts_give_both_sides_equal_environments_that_differ_by_layout(tmp_path):
    # Different trees (paths of different lengths) must not mean different stack offsets under one layout.
    trees = {"baseline": tmp_path / "b", "candidate": tmp_path / "a-much-longer-candidate-tree"}
    planned = gate_instructions.plan(trees, tmp_path, layouts=3)
    sizes = {name: [gate_instructions._block_bytes(env, gate_instructions._command(workdir)[1])
                    for workdir, env in runs] for name, runs in planned.items()}
    assert sizes["baseline"] == sizes["candidate"]
    assert len(set(sizes["baseline"])) == 3 and len({size % 64 for size in sizes["baseline"]}) == 3
    workdirs = [workdir for runs in planned.values() for workdir, _ in runs]
    assert len(set(workdirs)) == 6 and len({len(str(w)) for w in workdirs}) == 1
    assert str(trees["candidate"]) in planned["candidate"][0][1]["PYTHONPATH"]
    with pytest.raises(ValueError, match="layouts"):
        gate_instructions.plan(trees, tmp_path, layouts=0)


def test_a_side_count_is_the_mean_over_layouts_and_a_failure_under_any_layout_is_kept():
    def counted(*counts):
        return [[_record(instructions=n, instruction_repeats=[n])] for n in counts]

    merged = gate_instructions.merge_layouts(counted(100.0, 103.0))
    assert merged[0]["instructions"] == pytest.approx(101.5) and merged[0]["instruction_layouts"] == [100.0, 103.0]
    assert gate_instructions.merge_layouts([counted(100.0)[0], [_record(status="incorrect")]])[0]["status"] \
        == "incorrect"
    base, cand = gate_compare.pool([merged]), gate_compare.pool([gate_instructions.merge_layouts(counted(101, 103))])
    row, = gate_compare.compare(base, cand, instructions=True)
    assert row.ratio == pytest.approx(102 / 101.5) and "1.0000–1.0100 (2 layouts)" in row.note


def _record(impl="eager", status="ok", samples=(1.0, 1.1, 0.9), **extra) -> dict:
    return {"impl": impl, "device": "cpu", "dtype": "float32", "mode": "fwd", "scope": "core", "batch": 1,
            "seq_len": 64, "width": 32, "heads": 2, "columns": 3, "masked": False, "seed": 0, "status": status,
            "reason": None if status == "ok" else "because", "samples": list(samples), **extra}


def test_incorrect_or_broken_candidate_fails_and_a_bad_baseline_is_only_reported():
    base = gate_compare.pool([[_record(), _record("softmax_sdpa"), _record("triton", status="incorrect")]])
    cand = gate_compare.pool([[_record(status="incorrect"), _record("softmax_sdpa", status="crashed"),
                               _record("triton")]])
    verdicts = [row.verdict for row in gate_compare.compare(base, cand)]
    assert verdicts == [gate_compare.INCORRECT, gate_compare.BROKEN, gate_compare.NOT_COMPARED]
    assert [row.fails for row in gate_compare.compare(base, cand)] == [True, True, False]


# -- stored baselines: the fingerprint --------------------------------------------------------------------------
def _results(path: Path, cpu_model: str, torch_version: str, status: str = "ok") -> Path:
    path.mkdir()
    record = {"schema": 1, "point_id": "p1", "threads": 2, "device_name": cpu_model, "run_id": "r",
              "family": "additive", "time_median": 1.0, **_record(status=status)}
    (path / "points.jsonl").write_text(json.dumps(record) + "\n")
    (path / "run.json").write_text(json.dumps({"cpu_model": cpu_model, "torch": torch_version, "torch_threads": 2,
                                               "preset": "gate"}))
    return path


def _state(path: Path, copy_gbs: float, points: list[dict]) -> Path:
    """A stored run on this fingerprint with its copy bandwidth and the given points (eager, B=1, D=32)."""
    path.mkdir()
    lines = [json.dumps({"schema": 1, "point_id": f"p{n}", "threads": 1, "device_name": "AMD EPYC", "run_id": "r",
                         "family": "additive", **_record(**{"seq_len": 64 * 2**n, **point})})
             for n, point in enumerate(points)]
    (path / "points.jsonl").write_text("\n".join(lines) + "\n")
    (path / "run.json").write_text(json.dumps({"cpu_model": "AMD EPYC", "torch": "2.13.0+cpu", "preset": "gate",
                                               "copy_bytes_per_s": {"cpu": copy_gbs * 1e9}}))
    return path


def _steady(center: float, n: int = 30) -> list[float]:
    return [center * (1 + 0.002 * ((k * 7919) % 11 - 5)) for k in range(n)]


def test_a_stored_point_timed_under_contention_is_not_compared(tmp_path):
    # The false "regression" of issue 12: the candidate's point was timed beside a competitor. It must be
    # reported, never gated; the clean point beside it is still compared.
    base = _state(tmp_path / "base", 40, [{"samples": _steady(1.0)}, {"samples": _steady(2.0)}])
    cand = _state(tmp_path / "cand", 40, [{"samples": _steady(1.15), "contention": {"cpu_wait": 0.7}},
                                          {"samples": _steady(2.0)}])
    report = tmp_path / "gate.json"
    done = _gate("--baseline-results", str(base), "--candidate-results", str(cand), "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(report.read_text())["rows"]
    assert [r["verdict"] for r in rows] == ["not compared", "same"]
    assert "contended" in rows[0]["note"] and "70%" in rows[0]["note"]


def test_stored_runs_in_another_machine_state_are_refused_or_normalized(tmp_path):
    # Same machine type, half the copy bandwidth the day the baseline was measured: memory-bound times doubled.
    base = _state(tmp_path / "base", 20.7, [{"samples": _steady(2.0)}])
    cand = _state(tmp_path / "cand", 41.4, [{"samples": _steady(1.0)}])
    done = _gate("--baseline-results", str(base), "--candidate-results", str(cand))
    assert done.returncode == 2 and "another machine state" in done.stderr and "20.7 vs 41.4 GB/s" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    report = tmp_path / "gate.json"
    done = _gate("--baseline-results", str(base), "--candidate-results", str(cand), "--normalize", "--json",
                 str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    (row,) = result["rows"]
    assert row["verdict"] == "same" and abs(row["ratio"] - 1) < 0.01  # scaled by 41.4 / 20.7, not "2x faster"
    assert "scaled by the copy-bandwidth ratio (cpu 2)" in result["title"] and "eager N=64 D=32" in result["title"]


def _gate(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastformer_bench", "gate", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def test_stored_baseline_from_another_machine_is_refused_in_one_line(tmp_path):
    base = _results(tmp_path / "base", "AMD EPYC", "2.13.0+cpu")
    cand = _results(tmp_path / "cand", "Intel Xeon", "2.14.0+cpu")
    done = _gate("--baseline-results", str(base), "--candidate-results", str(cand))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "cpu_model 'AMD EPYC' vs 'Intel Xeon'" in lines[0] and "torch" in lines[0]


def test_stored_baseline_on_another_cpu_generation_under_the_same_name_is_refused(tmp_path):
    # "AMD EPYC" both times, but 1 MiB of L2 one day and 512 KiB the other: twice as fast at the same code
    base = _results(tmp_path / "base", "AMD EPYC", "2.13.0+cpu")
    cand = _results(tmp_path / "cand", "AMD EPYC", "2.13.0+cpu")
    for path, l2, signature in ((base, 2**20, "AuthenticAMD family 25 model 17 stepping 1"),
                                (cand, 2**19, "AuthenticAMD family 25 model 1 stepping 1")):
        run = json.loads((path / "run.json").read_text())
        run.update(cpu_caches_bytes={"L1d": 2**15, "L2": l2, "L3": 2**25}, cpu_signature=signature)
        (path / "run.json").write_text(json.dumps(run))
    done = _gate("--baseline-results", str(base), "--candidate-results", str(cand))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "L2 1 MiB" in done.stderr and "L2 512 KiB" in done.stderr and "model 17" in done.stderr
    # a run that did not record the facts (older results) is compared on the fingerprint alone
    run = json.loads((base / "run.json").read_text())
    del run["cpu_caches_bytes"], run["cpu_signature"]
    (base / "run.json").write_text(json.dumps(run))
    assert _gate("--baseline-results", str(base), "--candidate-results", str(cand)).returncode == 0


def test_stored_baseline_with_the_same_fingerprint_is_compared(tmp_path):
    base = _results(tmp_path / "base", "AMD EPYC", "2.13.0+cpu")
    same = _results(tmp_path / "same", "AMD EPYC", "2.13.0+cpu")
    wrong = _results(tmp_path / "wrong", "AMD EPYC", "2.13.0+cpu", status="incorrect")
    markdown = tmp_path / "gate.md"
    done = _gate("--baseline-results", str(base), "--candidate-results", str(same), "--markdown", str(markdown))
    assert done.returncode == 0, done.stderr
    assert "| eager cpu float32 fwd" in markdown.read_text() and "PASS" in markdown.read_text()
    assert _gate("--baseline-results", str(base), "--candidate-results", str(wrong)).returncode == 1


def test_github_output_gives_the_verdict_first_annotations_and_a_step_summary(tmp_path):
    import os

    base = _results(tmp_path / "base", "AMD EPYC", "2.13.0+cpu")
    wrong = _results(tmp_path / "wrong", "AMD EPYC", "2.13.0+cpu", status="incorrect")
    step_summary = tmp_path / "summary.md"
    step_summary.write_text("earlier step\n")
    done = _gate("--baseline-results", str(base), "--candidate-results", str(wrong), "--github",
                 env={**os.environ, "GITHUB_STEP_SUMMARY": str(step_summary)})
    assert done.returncode == 1
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::error ")]
    assert len(annotations) == 1 and "title=fastformer-bench gate%3A incorrect::eager cpu" in annotations[0]
    text = step_summary.read_text()
    assert text.startswith("earlier step\n**FAIL**: 1 of 1 points fail")  # appended, verdict first
    failing, folded = text.split("<details>")
    assert "| eager cpu float32 fwd" in failing and "| eager cpu float32 fwd" in folded and "</details>" in folded


def test_github_annotations_escape_what_would_end_the_command():
    row = gate_compare.Row("a: b, 100%\nnext", 1.0, 2.0, 2.0, 1.9, 2.1, 1e-6, gate_stats.REGRESSION, "")
    line, = gate_table.github_annotations([row], instructions=False)
    assert line == ("::error title=fastformer-bench gate%3A regression::"
                    "a: b, 100%25%0Anext: regression: time ratio 2.000")


def test_a_wrong_request_is_exit_2():
    done = _gate("--baseline-rev", "no-such-revision-xyz")
    assert done.returncode == 2 and "names no commit" in done.stderr


# -- end to end on this machine --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of the repository under test whose HEAD is its current working tree: baseline = candidate code."""
    return snapshot(REPO, tmp_path_factory.mktemp("gate") / "clone")


def _rows(report: Path) -> dict[str, dict]:
    rows = json.loads(report.read_text())["rows"]
    return {"slowed" if " vs test_" in row["label"] else "unchanged": row for row in rows}


def test_ab_wall_time_passes_unchanged_code_and_catches_a_slowed_candidate(clone, tmp_path):
    # The plumbing end to end, at a slowdown (2x) that no load on a busy machine hides in 3 short rounds (the
    # fewest compared round by round); the gate's power at 5-25 % is the self-test's business
    # (scripts/gate_selftest.py), not a unit test's.
    report = tmp_path / "gate.json"
    done = _gate("--repo", str(clone), "--baseline-rev", "HEAD", "--impl", "eager,eager", "--candidate-impl",
                 "eager,test_slowdown", *TINY, "--rounds", "3", "--min-time", "0.3", "--json", str(report),
                 env=plugin_env("2"))
    assert done.returncode == 1, done.stderr[-2000:]
    rows = _rows(report)
    assert rows["unchanged"]["verdict"] != "regression", rows
    assert rows["slowed"]["verdict"] == "regression", rows
    assert all(len(row["round_ratios"]) == 3 for row in rows.values()), rows  # each round's own ratio
    assert rows["slowed"]["note"].startswith("3 paired rounds") and "Student's t" in done.stdout


@pytest.mark.skipif(gate_instructions.valgrind_missing() is not None,
                    reason=f"instruction counts need valgrind: {gate_instructions.valgrind_missing()}")
def test_instruction_counts_flag_two_percent_more_work_and_not_unchanged_code(clone, tmp_path):
    report = tmp_path / "gate.json"
    done = _gate("--repo", str(clone), "--baseline-rev", "HEAD", "--instructions", "--impl", "eager,eager",
                 "--candidate-impl", "eager,test_extra", *TINY, "--mode", "fwd", "--json", str(report),
                 env=plugin_env("1.02"))
    assert done.returncode == 1, done.stderr[-2000:]
    rows = _rows(report)
    # Each side is the mean of 3 layouts; a single layout pair read up to 0.7 % apart on unchanged code.
    assert rows["unchanged"]["verdict"] == "same" and abs(rows["unchanged"]["ratio"] - 1) < 0.005, rows
    assert "3 layouts" in rows["unchanged"]["note"], rows
    assert rows["slowed"]["verdict"] == "regression" and rows["slowed"]["ratio"] > 1.01, rows


@pytest.mark.parametrize("factor", ["1.01", "1.02", "1.05", "1.25"])
def test_the_self_tests_counted_calls_hold_exactly_the_extra_candidates_factor(factor, monkeypatch):
    # test_extra adds whole eager calls; at 1.01 the gate's default 50 counted calls held none of them (101/100),
    # so the self-test's 1 % trials could not be caught. Any run of the chosen count, from any starting debt,
    # must hold exactly factor x the eager calls.
    calls = calls_for_exact_work(factor, 50)
    exact = slowed_impls.slowdown_factor(factor)
    made = []
    monkeypatch.setattr(slowed_impls, "_FACTOR", exact)
    monkeypatch.setattr(slowed_impls, "_debt", [0])
    monkeypatch.setattr(slowed_impls, "eager_additive_attention", lambda x, w, mask=None: made.append(1))
    for debt in (0, exact.denominator - 1, exact.denominator // 2):
        slowed_impls._debt[0] = debt
        made.clear()
        for _ in range(calls):
            slowed_impls.EXTRA.fn(None, None)
        assert calls >= 50 and len(made) == calls * exact, (factor, calls, debt, len(made))


# -- structure ---------------------------------------------------------------------------------------------------
def test_importing_the_gate_does_not_import_the_cli():
    code = "import sys, fastformer_bench.gate; print('fastformer_bench.cli' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "False"


def test_the_gate_presets_take_a_new_built_in_implementation_and_no_plugin(monkeypatch):
    # The gate presets select implementations by the registry's facts (presets.select_impls), so one added to the
    # registry's table is gated on arrival, in wall time and (it does not compile) in instruction counts; a plugin
    # is measured only where a gate names it.
    import dataclasses

    from testkit import plugin_impl

    from fastformer_bench import impls, presets

    twin = dataclasses.replace(impls.get("eager"), name="eager_twin")
    monkeypatch.setitem(impls.REGISTRY.entries, "eager_twin", ("fastformer_bench.impls.additive_eager", "EAGER"))
    monkeypatch.setitem(impls.REGISTRY.loaded, "eager_twin", twin)
    with impls.registered(plugin_impl.MIRROR):
        for name in ("gate", "gate-instructions"):
            measured = {p.impl for p in presets.expand(presets.load(name))[0]}
            assert "eager_twin" in measured and plugin_impl.MIRROR.name not in measured, (name, measured)


def test_pairing_keys_and_overridable_axes_come_from_the_axis_table():
    from fastformer_bench import axes
    from fastformer_bench.gate import modes

    assert gate_compare.KEY_FIELDS == axes.NAMES
    assert set(modes.RUN_AXES) == set(axes.NAMES) - {"impl"}


# -- the wall-time worker against this tree and an older baseline's ----------------------------------------------
def _worker_protocol(tree: Path, workdir: Path) -> None:
    """setup + samples of a tiny point, and the preflight's refusal of an unsupported one, from ``tree``."""
    import torch

    sides.check_imports_from(tree)
    worker = Worker("side", tree, workdir)
    try:
        params = {"impl": "eager", "batch": 1, "seq_len": 64, "width": 32, "heads": 2}
        setup = worker.ask({"op": "setup", "params": params, "threads": 1, "warmup_s": 0.01})
        assert setup["status"] == "ok" and setup["per_call_s"] > 0 and setup["max_rel_err"] < 1e-4, setup
        for _ in range(2):
            reply = worker.ask({"op": "sample", "calls": 3})
            assert reply.get("s", 0) > 0, reply
        if not torch.cuda.is_available():
            refused = worker.ask({"op": "setup", "params": {**params, "device": "cuda"}, "threads": 1})
            assert refused == {"status": "unsupported", "reason": "no CUDA device on this machine"}, refused
    finally:
        worker.close()
    assert worker.proc.returncode == 0, (workdir / "stderr.txt").read_text()


def test_wall_worker_runs_against_this_tree(tmp_path):
    _worker_protocol(REPO, tmp_path)


def _kernel_allows_fixed_addresses() -> bool:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).personality(0x0040000) == -1)"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_a_rounds_workers_run_at_fixed_addresses_shifted_by_the_rounds_layout(tmp_path):
    # Both sides of a round get the same layout with the kernel's address randomization off, so where code and
    # data land cancels within the round (it moved eager's time by up to 10 % per process); a worker that kept
    # random addresses, or never saw the layout, would bring that noise back unseen.
    layout = ab.random_layout(random.Random(3))
    worker = Worker("side", REPO, tmp_path, None, layout)
    try:
        params = {"impl": "eager", "batch": 1, "seq_len": 64, "width": 32, "heads": 2}
        setup = worker.ask({"op": "setup", "params": params, "threads": 1, "warmup_s": 0.01})
    finally:
        worker.close()
    assert setup["status"] == "ok", setup
    assert setup["layout_shift"] == [int(v) for v in layout.split(",")[:2]] and setup["layout_shift"][0] > 0, setup
    assert setup["layout"] == ("fixed" if _kernel_allows_fixed_addresses() else "random"), setup


def test_a_round_times_short_samples_that_fill_the_presets_time_within_its_bounds():
    # Short samples (one burst of a neighbour's load spoils few of them), as many as fill min_time_s: 20 samples
    # of 30 ms left eager's round-to-round ratio 3x noisier than 100 of 6 ms for the same time.
    settings = {"min_time_s": 0.6, "min_samples": 20, "max_samples": 200}
    for per_call in (1e-5, 1.4e-3, 4e-3):
        calls, samples = ab.sampling(per_call, settings)
        assert abs(calls * per_call - ab.SAMPLE_S) <= per_call / 2, (per_call, calls)
        assert abs(samples * calls * per_call - 0.6) < 0.6 * 0.1, (per_call, calls, samples)
    assert ab.sampling(0.026, settings) == (1, 23)  # a call longer than a sample: one call per sample
    assert ab.sampling(0.5, settings) == (1, 20)  # never fewer than min_samples
    assert ab.sampling(1e-6, {**settings, "min_time_s": 60})[1] == 200  # never more than max_samples


def test_the_self_test_tells_each_slowed_candidate_from_the_others():
    # One gate measures several factors (test_slowdown, test_slowdown_2, ...): "vs test_slowdown" is also the
    # start of "vs test_slowdown_2", and a caught 1.25x must not count as a caught 1.05x.
    labels = ["eager B=2", "eager B=2 vs test_slowdown", "eager B=2 vs test_slowdown_2", "sdpa B=2"]
    result = {"rows": [{"label": label} for label in labels]}
    assert [r["label"] for r in gate_selftest.rows(result, slowdown_name(0))] == [labels[1]]
    assert [r["label"] for r in gate_selftest.rows(result, slowdown_name(1))] == [labels[2]]
    assert [r["label"] for r in gate_selftest.rows(result, None)] == [labels[0], labels[3]]


def test_wall_worker_runs_against_a_baseline_from_before_the_gate_package(tmp_path):
    try:
        sides.resolve_rev(REPO, OLD_REV)
    except ValueError:
        pytest.skip(f"commit {OLD_REV} is not in this clone (shallow?): the old-API path of the workers is untested")
    with sides.worktree(REPO, OLD_REV) as tree:
        assert not (tree / "fastformer_bench" / "point.py").exists()  # the compatibility path is the one taken
        _worker_protocol(tree, tmp_path)


def test_the_self_test_counts_a_failing_wrapper_at_factor_one_as_a_false_alarm_not_a_catch():
    # Factor 1 is harmless different code: a regression there is a false alarm, never a caught slowdown, and
    # identical-code rows stay scored on their own.
    rows = [{"label": "eager B=2", "fails": False, "verdict": "same"},
            {"label": "eager B=2 vs test_slowdown", "fails": True, "verdict": "regression"},
            {"label": "eager B=2 vs test_slowdown_2", "fails": True, "verdict": "regression"},
            {"label": "eager B=2 vs test_slowdown_3", "fails": False, "verdict": "same"}]
    slowed = {"1.00": slowdown_name(0), "1.05": slowdown_name(1), "1.25": slowdown_name(2)}
    verdict = gate_selftest.score({"rows": rows}, slowed)
    assert verdict["false_alarm"] is False and verdict["false_alarm_wrapped"] is True
    assert verdict["caught_by_factor"] == {"1.05": True, "1.25": False} and verdict["caught"] is False
    assert verdict["wrapped_labels"] == [rows[1]["label"]]
    rows[1].update(fails=False, verdict="same")
    rows[3].update(fails=True, verdict="regression")
    verdict = gate_selftest.score({"rows": rows}, slowed)
    assert verdict["false_alarm_wrapped"] is False and verdict["caught"] is True
    summary = gate_selftest.summary([{"wall_s": 1.0, **verdict, "rows": rows}])
    assert summary["false_alarms"] == summary["false_alarms_wrapped"] == 0 and summary["caught"] == 1


def test_the_self_test_names_the_rows_measured_in_follow_up_rounds():
    rows = [{"label": "a", "round_ratios": [1.0] * 12}, {"label": "b", "round_ratios": [1.0] * 20},
            {"label": "c", "round_ratios": None}]
    assert gate_selftest.follow_up_rounds(rows) == {"b": 8}
    assert gate_selftest.follow_up_rounds(rows[:1]) == {} and gate_selftest.follow_up_rounds([]) == {}
    trials = [{"wall_s": 1.0, "false_alarm": False, "caught": True, "follow_up_rounds": {"b": 8}},
              {"wall_s": 2.0, "false_alarm": False, "caught": True, "follow_up_rounds": {}}]
    assert gate_selftest.summary(trials)["trials_followed_up"] == 1
