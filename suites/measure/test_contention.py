"""measure.contention: the counters of other work on the machine, read as shares of the time between two reads."""

from __future__ import annotations

from fastformer_bench.measure.contention import contention_counters, contention_since, cpu_contention, cpu_mhz


def test_contention_degrades_to_none_without_counters():
    shares = contention_since({"wall_s": 0.0})  # a start with no counters (an OS without PSI or /proc/stat)
    assert shares == {"cpu_wait": None, "cpu_pressure": None, "cpu_steal": None}


def test_shares_since_a_read_are_fractions_or_none():
    start = contention_counters()
    sum(range(200_000))  # some time on the CPU between the reads
    shares = contention_since(start)
    assert set(shares) == {"cpu_wait", "cpu_pressure", "cpu_steal"}
    assert all(share is None or 0.0 <= share <= 1.0 for share in shares.values()), shares


def test_machine_readings_are_plausible_or_none():
    found = cpu_contention()
    assert set(found) == {"load_avg_1m", "cpu_pressure_some_avg10"}
    assert found["load_avg_1m"] is None or found["load_avg_1m"] >= 0
    mhz = cpu_mhz()
    assert mhz is None or mhz > 0
