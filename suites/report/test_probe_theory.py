"""The probe report's theory beside measurement (MQAR's one-pair ceiling) and capability beside speed (the join
of probe accuracy with a speed study's time per token)."""

from __future__ import annotations

import pytest

from fastformer_bench.report import probe_speed, probe_theory


@pytest.mark.parametrize(("vocab", "values"), [(64, 32), (65, 32), (130, 65), (5, 2)])
def test_the_values_are_the_generators_slice_of_the_vocabulary(vocab, values):
    assert probe_theory.values(vocab) == values


def test_the_values_match_the_tasks_chance():
    tasks = pytest.importorskip("fastformer_bench.probe.tasks")
    for vocab in (64, 130):
        assert tasks.shape("mqar", 64, vocab).chance == pytest.approx(1 / probe_theory.values(vocab))


@pytest.mark.parametrize(("pairs", "values", "expected"), [
    (1, 32, 1.0), (8, 32, (1 + 7 / 32) / 8), (4, 65, (1 + 3 / 65) / 4), (64, 65, (1 + 63 / 65) / 64)])
def test_the_ceiling_is_one_pair_recalled_and_the_rest_guessed(pairs, values, expected):
    assert probe_theory.ceiling(pairs, values) == pytest.approx(expected)
    assert 1 / values <= probe_theory.ceiling(pairs, values) <= 1


def _cell(pairs: int, mean: float, low: float, high: float, mixer: str = "additive", task: str = "mqar") -> dict:
    return {"task": task, "mixer": mixer, "columns": 3, "seq_len": 64, "width": 64, "pairs": pairs, "vocab": 64,
            "steps": 300, "mean": mean, "low": low, "high": high, "seeds": 3}


def test_each_mqar_cell_is_placed_against_its_ceiling_in_words():
    table = [_cell(8, 0.159, 0.150, 0.163),           # ceiling 15.2 %: within the seeds' range
             _cell(16, 0.119, 0.115, 0.128),          # ceiling 9.2 %: above
             _cell(4, 0.033, 0.030, 0.039),           # ceiling 27.3 %: below
             _cell(8, 0.98, 0.95, 0.99, mixer="softmax"), _cell(8, 1.0, 1.0, 1.0, task="topic")]
    found = probe_theory.cells(table)
    assert [(c["pairs"], c["verdict"]) for c in found] == [(8, "agrees"), (16, "above"), (4, "below")]
    assert found[0]["values"] == 32 and found[0]["ceiling"] == pytest.approx((1 + 7 / 32) / 8)
    text = " ".join(probe_theory.sentences(found))
    assert "vocabulary 64 gives V = 32" in text
    assert "within the seeds' range at N = 64, width 64, C = 3, 8 pairs, 300 steps (15.9 % against 15.2 %)" in text
    assert "Above it at N = 64, width 64, C = 3, 16 pairs, 300 steps (11.9 % against 9.2 %)" in text
    assert "Below it at 1 of 3 cells" in text
    assert [r["ceiling"] for r in probe_theory.table_rows(found)] == ["15.2 %", "9.2 %", "27.3 %"]


def test_no_cell_agreeing_is_said():
    found = probe_theory.cells([_cell(4, 0.033, 0.030, 0.039)])
    assert "At no cell does the ceiling lie within the seeds' range." in probe_theory.sentences(found)


def _speed(impl: str, width: int, seq_len: int, seconds: float, family: str = "additive", **extra) -> dict:
    return {"kind": None, "status": "ok", "mode": "fwd", "scope": "core", "dtype": "float32", "batch": 1,
            "threads": 1, "columns": 3, "impl": impl, "family": family,
            "complexity": "quadratic" if impl in ("reference", "softmax_sdpa") else "linear", "width": width,
            "seq_len": seq_len, "time_median": seconds, "run_id": "cpu-1", **extra}


SPEED = [_speed("eager", w, n, 1e-6 * n * w / 256) for w in (256, 512) for n in (256, 1024)] + \
        [_speed("stream", w, n, 0.5e-6 * n * w / 256) for w in (256, 512) for n in (256, 1024)] + \
        [_speed("softmax_sdpa", w, n, 1e-8 * n * n, family="softmax") for w in (256, 512) for n in (256, 1024)] + \
        [_speed("reference", 256, 256, 1.0), _speed("eager", 256, 256, 9.0, mode="fwd_bwd"),
         _speed("eager", 256, 256, 9.0, threads=2), _speed("eager", 256, 256, 9.0, batch=4)]
IMPLS = {"additive": "eager", "softmax": "softmax_sdpa"}


def _headline(task: str, seq_len: int, width: int, softmax: float, additive: float, pairs: int = 8) -> dict:
    return {"task": task, "seq_len": seq_len, "width": width, "pairs": pairs, "steps": 300, "softmax": softmax,
            "additive": additive, "gap_points": round(100 * (softmax - additive), 1)}


def test_the_join_reads_the_time_per_token_at_the_same_width_and_n():
    rows = probe_speed.join([_headline("count", 1024, 512, 0.97, 0.95)], IMPLS, SPEED, 0.95)
    (row,) = rows
    soft = row["softmax_time"]
    assert (soft["impl"], soft["width"], soft["seq_len"]) == ("softmax_sdpa", 512, 1024)
    assert soft["s_per_token"] == pytest.approx(1e-8 * 1024)
    times = {t["impl"]: t for t in row["additive_times"]}
    assert sorted(times) == ["eager", "stream"]  # the quadratic reference is no way to run the model
    assert times["eager"]["s_per_token"] == pytest.approx(2e-6) and times["eager"]["probe_impl"]
    assert times["eager"]["faster"] == pytest.approx(1e-8 * 1024 / 2e-6)
    assert probe_speed.table_rows(rows, 300)[0]["note"] == "-"
    assert "(width" not in probe_speed.sentences(rows, 300)[0]


def test_the_join_takes_the_largest_n_where_the_control_passed_and_says_what_was_not_measured():
    headlines = [_headline("mqar", 64, 64, 0.99, 0.16), _headline("mqar", 192, 64, 1.0, 0.04, pairs=64),
                 _headline("mqar", 192, 64, 0.99, 0.05, pairs=8), _headline("mqar", 1024, 64, 0.10, 0.03),
                 _headline("duplicate", 64, 64, 0.5, 0.5)]
    inconclusive, row = probe_speed.join(headlines, IMPLS, SPEED, 0.95)  # duplicate: the control never passed
    assert (inconclusive["task"], inconclusive["conclusive"]) == ("duplicate", False)
    assert probe_speed.table_rows([inconclusive], 300)[0]["given up (points)"] == "– (inconclusive)"
    assert "inconclusive" in probe_speed.sentences([inconclusive], 300)[0]
    assert (row["task"], row["seq_len"], row["pairs"], row["conclusive"]) == ("mqar", 192, 64, True)
    assert {(t["width"], t["seq_len"]) for t in [row["softmax_time"], *row["additive_times"]]} == {(256, 256)}
    note = probe_speed.table_rows([row], 300)[0]["note"]
    assert note == "width 64 not measured, timed at width 256; N = 192 not measured, timed at N = 256"
    assert note in probe_speed.sentences([row], 300)[0]


def test_a_missing_implementation_is_said():
    rows = probe_speed.join([_headline("topic", 256, 256, 1.0, 1.0)], {"additive": "eager", "softmax": "flash"},
                            SPEED, 0.95)
    assert rows[0]["softmax_time"] is None
    assert probe_speed.sentences(rows, 300) == ["topic: the speed study did not time both mixers' implementations."]
    assert probe_speed.figure(rows, None, 300) == []
