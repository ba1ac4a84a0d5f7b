"""The largest-size analyses: fits past the last-level cache, t = a + bN + cN², speedups at fixed N, and the
share of the same run's roofs (copy bandwidth and GEMM FLOP/s, per thread count)."""

from __future__ import annotations

import math

import pytest
from testkit.synthetic_results import run_env, synthetic_records, write_results

from fastformer_bench.report import analysis, asymptotics, build_report, load

LLC = 32 * 2**20
#: a linear implementation that runs twice as fast per token while its inputs (3 x N x 256 x 4 B) fit the LLC
CACHE_NS = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]


def _cache_step_records(threads: int = 1, cache: int = LLC) -> list[dict]:
    records = []
    for i, n in enumerate(CACHE_NS):
        inputs = 3 * n * 256 * 4
        per_token = 1e-9 if inputs > cache else 0.4e-9
        t = per_token * n * (1 + 0.005 * math.sin(i * 1.3))
        base = next(r for r in synthetic_records() if r["impl"] == "eager" and r["mode"] == "fwd")
        records.append({**base, "point_id": f"step-{threads}-{n}", "batch": 1, "seq_len": n, "width": 256,
                        "heads": 8, "threads": threads, "time_median": t, "time_p20": t, "time_p80": t,
                        "samples": [t] * 3, "flops": 8.0 * n * 256, "bytes_min": 16.0 * n * 256})
    return records


def _env(**extra) -> dict:
    return {**run_env(), "last_level_cache_bytes": LLC, **extra}


def test_a_time_fit_keeps_to_the_inputs_past_the_cache(tmp_path):
    frame, _ = load([str(write_results(tmp_path, _cache_step_records(), _env()))])
    fit = next(f for f in analysis.scaling_fits(frame, "time") if f["impl"] == "eager")
    # across the step the slope would read ~1.15; past the cache the time is exactly linear
    assert fit["fit_range"] == analysis.PAST_LLC
    assert fit["n_min"] == 16384 and fit["n_max"] == 131072
    assert 0.98 < fit["slope"] < 1.02
    assert fit["inputs_max_bytes"] == pytest.approx(3 * 131072 * 256 * 4, rel=1e-5)


def test_without_a_known_cache_the_fit_takes_the_top_half(tmp_path):
    # the step between N = 32768 and 65536, inside the top half of the N
    frame, _ = load([str(write_results(tmp_path, _cache_step_records(cache=4 * LLC), run_env()))])
    fit = next(f for f in analysis.scaling_fits(frame, "time") if f["impl"] == "eager")
    assert fit["fit_range"] == analysis.TOP_HALF
    assert fit["n_min"] == 16384
    assert fit["slope"] > 1.05


def test_the_quadratic_model_recovers_its_coefficients():
    ns = [2**k for k in range(8, 17)]
    a, b, c = 1e-4, 2e-8, 3e-13
    times = [(a + b * n + c * n * n) * (1 + 0.01 * math.sin(i * 2.1)) for i, n in enumerate(ns)]
    fit = asymptotics.fit_quadratic(ns, times)
    assert fit["b_ci"][0] < b < fit["b_ci"][1]
    assert fit["c_ci"][0] < c < fit["c_ci"][1]
    assert fit["c_ci"][0] > 0  # the N² term is there and the fit says so
    share = c * ns[-1] ** 2 / (a + b * ns[-1] + c * ns[-1] ** 2)
    assert fit["quadratic_share_at_n_max"] == pytest.approx(share, rel=0.1)


def test_a_linear_time_has_no_significant_quadratic_term():
    ns = [2**k for k in range(8, 17)]
    times = [(5e-5 + 1e-8 * n) * (1 + 0.01 * math.sin(i * 2.1)) for i, n in enumerate(ns)]
    fit = asymptotics.fit_quadratic(ns, times)
    assert fit["c_ci"][0] < 0 < fit["c_ci"][1]
    assert fit["b_ci"][0] < 1e-8 < fit["b_ci"][1]


def test_polynomial_fits_use_the_past_cache_range(tmp_path):
    frame, _ = load([str(write_results(tmp_path, _cache_step_records(), _env()))])
    fit = next(f for f in asymptotics.polynomial_fits(frame) if f["impl"] == "eager")
    assert fit["fit_range"] == analysis.PAST_LLC and fit["n_min"] == 16384
    assert fit["c_ci"][0] < 0 < fit["c_ci"][1]
    assert fit["b_ci"][0] < 1e-9 < fit["b_ci"][1]
    assert fit["complexity"] == "linear"


def test_speedups_at_a_fixed_n_and_at_the_largest_n_both_ran(tmp_path):
    frame, _ = load([str(write_results(tmp_path))])
    rows = asymptotics.speedups(frame)
    row = next(r for r in rows if r["impl"] == "eager" and r["baseline"] == "softmax_sdpa" and r["width"] == 64
               and r["mode"] == "fwd")
    # synthetic: t(sdpa) / t(eager) = 1e-8 N² / 1e-6 N = N / 100, within the ±1% wobble of each side
    assert row["largest_n"] == 2048
    assert row["speedup_at_largest_n"] == pytest.approx(20.48, rel=0.03)
    assert row["speedup"] is None  # N = 8192 was not measured
    assert row["complexity"] == "linear"


def test_roofs_are_read_per_thread_count(tmp_path):
    records = _cache_step_records(1) + _cache_step_records(2)
    roofs = [{"device": "cpu", "threads": 1, "copy_bytes_per_s": 4e10, "gemm_flops_per_s": 1e11},
             {"device": "cpu", "threads": 2, "copy_bytes_per_s": 5e10, "gemm_flops_per_s": 2e11}]
    frame, _ = load([str(write_results(tmp_path, records, _env(roofs=roofs)))])
    by_threads = frame.groupby("threads")[["copy_bw", "gemm_flops"]].max()
    assert by_threads.loc[1].tolist() == [4e10, 1e11]
    assert by_threads.loc[2].tolist() == [5e10, 2e11]
    rows = {r.get("threads", 0): r for r in asymptotics.streaming_bandwidth(frame)}
    # points with B·N·D >= 2^25: N = 131072 at width 256; bytes_min / t = 16·256 B / 1e-9 s per token
    share = 16 * 256 / 1e-9 / 4e10
    if "threads" in analysis.SLICE:
        assert rows[1]["share_median"] == pytest.approx(share, rel=0.01)
        assert rows[2]["share_median"] == pytest.approx(share * 4 / 5, rel=0.01)
    assert all(r["n_values"] == [131072] for r in rows.values())


def test_a_point_is_set_against_the_gemm_roof_of_its_own_dtype(tmp_path):
    records = [{**r, "dtype": dtype, "compute_dtype": dtype, "point_id": f"{r['point_id']}-{dtype}"}
               for r in _cache_step_records(2) for dtype in ("float32", "bfloat16", "float16")]
    roofs = [{"device": "cpu", "threads": 2, "copy_bytes_per_s": 5e10, "gemm_flops_per_s": 2e11,
              "gemm_dtype": "float32", "gemm_flops_per_s_by_dtype": {"float32": 2e11, "bfloat16": 9e11}}]
    frame, _ = load([str(write_results(tmp_path / "a", records, _env(roofs=roofs)))])
    gemm = frame.groupby("dtype")["gemm_flops"].max()
    assert gemm["float32"] == 2e11 and gemm["bfloat16"] == 9e11
    assert math.isnan(gemm["float16"])  # no fp16 GEMM measured: no roof rather than the float32 one
    # a run that measured float32 alone (every run before the by-dtype roofs) gives bf16 points no GEMM roof
    old = [{k: v for k, v in roofs[0].items() if k not in ("gemm_dtype", "gemm_flops_per_s_by_dtype")}]
    frame, _ = load([str(write_results(tmp_path / "b", records, _env(roofs=old)))])
    gemm = frame.groupby("dtype")["gemm_flops"].max()
    assert gemm["float32"] == 2e11 and math.isnan(gemm["bfloat16"])
    rows = {r["dtype"]: r for r in asymptotics.streaming_bandwidth(frame)}
    assert rows["bfloat16"]["flops_share_of_gemm"] is None and rows["float32"]["flops_share_of_gemm"] > 0


def test_an_oom_of_the_float64_check_is_no_memory_limit_of_the_implementation(tmp_path):
    from fastformer_bench.results import REFERENCE_OOM

    def limits(reason: str) -> dict:
        records = _cache_step_records()
        for r in records[-2:]:
            r.update(status="oom", reason=reason, time_median=None, time_p20=None, time_p80=None, samples=None)
        frame, _ = load([str(write_results(tmp_path / reason[:3], records, _env()))])
        return next(r for r in analysis.oom_limits(frame) if r["impl"] == "eager")

    own = limits("OutOfMemoryError: CUDA out of memory. Tried to allocate 8.00 GiB")
    assert own["first_oom_n"] == CACHE_NS[-2] and own["largest_ok_n"] == CACHE_NS[-3]
    checked = limits(f"{REFERENCE_OOM} (softmax_sdpa): OutOfMemoryError: CUDA out of memory.")
    assert checked["first_oom_n"] is None and checked["largest_ok_n"] == CACHE_NS[-3]


def test_a_gpu_point_is_measured_against_the_gpu_l2_not_the_hosts_llc(tmp_path):
    records = [{**r, "device": "cuda"} for r in _cache_step_records()]
    env = _env(gpu_l2_bytes=LLC, last_level_cache_bytes=300 * 2**20)
    frame, _ = load([str(write_results(tmp_path, records, env))])
    assert set(frame["llc_bytes"]) == {LLC}
    fit = next(f for f in analysis.scaling_fits(frame, "time") if f["impl"] == "eager")
    assert fit["fit_range"] == analysis.PAST_LLC and fit["n_min"] == 16384


def test_the_share_of_the_best_copy_takes_the_highest_reading_of_the_run_at_the_points_thread_count(tmp_path):
    """Start roof, end roof and the copies after each point all count; another thread count's copies do not."""
    records = _cache_step_records(1) + _cache_step_records(2)
    for r in records:
        r["copy_bytes_per_s_now"] = {1: 3e10, 2: 9e10}[r["threads"]] if r["seq_len"] == 1024 else 4.5e10
    roofs = [{"device": "cpu", "threads": 1, "copy_bytes_per_s": 4e10},
             {"device": "cpu", "threads": 2, "copy_bytes_per_s": 5e10}]
    ends = [{"device": "cpu", "threads": 1, "copy_bytes_per_s": 6e10},
            {"device": "cpu", "threads": 2, "copy_bytes_per_s": 7e10}]
    frame, _ = load([str(write_results(tmp_path, records, _env(roofs=roofs, roofs_end=ends)))])
    rows = {r.get("threads", 0): r for r in asymptotics.streaming_bandwidth(frame)}
    rate = 16 * 256 / 1e-9  # bytes_min / t at the one streaming point (N = 131072)
    assert rows[1]["copy_best"] == 6e10 and rows[1]["share_best_median"] == pytest.approx(rate / 6e10, rel=0.01)
    assert rows[2]["copy_best"] == 9e10 and rows[2]["share_best_median"] == pytest.approx(rate / 9e10, rel=0.01)
    assert rows[1]["share_median"] == pytest.approx(rate / 4e10, rel=0.01)  # the start roof's reading stays
    text = "\n".join(markdown_largest(frame))
    assert "of the best copy the run measured at this thread count (60 GB/s)" in text


def markdown_largest(frame) -> list[str]:
    from fastformer_bench.report import markdown

    return markdown.largest_sizes({"speedups": [], "streaming": asymptotics.streaming_bandwidth(frame),
                                   "streaming_elements": asymptotics.STREAMING_ELEMENTS, "poly_fits": []})


def test_the_report_states_the_largest_sizes_and_the_roofs(tmp_path):
    roofs = [{"device": "cpu", "threads": 2, "copy_bytes_per_s": 1e10, "gemm_flops_per_s": 1e11}]
    results = write_results(tmp_path / "r", env=_env(roofs=roofs))
    build_report([str(results)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "### At the largest sizes" in text
    assert "Speedup over softmax_sdpa" in text and "at the largest N both ran: eager" in text
    assert "cpu x2: copy 10 GB/s, GEMM 100 GFLOP/s" in text
    assert "### t = a + b·N + c·N²" in text


def test_the_backward_ratio_is_also_given_past_the_cache(tmp_path):
    """fwd_bwd / fwd per shape, and over the shapes whose inputs exceed the LLC alone: there the forward's and
    the backward's working sets both come from memory; below it a ratio also says which of them still fits."""
    base, records = _cache_step_records()[0], []
    for n, ratio in [(2048, 5.0), (8192, 4.0), (16384, 2.6), (65536, 2.8)]:  # inputs past 32 MiB from 16384
        for mode in ("fwd", "fwd_bwd"):
            t = 1e-9 * n * (ratio if mode == "fwd_bwd" else 1)
            records.append({**base, "point_id": f"{mode}-{n}", "mode": mode, "seq_len": n, "width": 256,
                            "heads": 8, "batch": 1, "time_median": t, "time_p20": t, "time_p80": t,
                            "samples": [t] * 3})
    frame, _ = load([str(write_results(tmp_path, records, _env()))])
    row = next(r for r in analysis.fwd_bwd(frame) if r["impl"] == "eager")
    assert row["median"] == pytest.approx(3.4) and row["n"] == 4
    assert [(s["seq_len"], s["past_llc"]) for s in row["shapes"]] == [(2048, False), (8192, False), (16384, True),
                                                                    (65536, True)]
    assert row["past_llc"]["median"] == pytest.approx(2.7) and row["past_llc"]["n"] == 2
    frame, _ = load([str(write_results(tmp_path / "unknown", records, run_env()))])
    assert next(r for r in analysis.fwd_bwd(frame) if r["impl"] == "eager")["past_llc"] is None


def test_points_timed_in_a_memory_bandwidth_slump_are_named_and_read_against_the_same_time_copy(tmp_path):
    # The run's roof is 40 GB/s; right after N = 131072 the host's copy read 12 GB/s (another tenant streaming
    # memory), so that point runs at 30 % of the roof but 100 % of what the memory system gave it then.
    records = _cache_step_records()
    for r in records:
        if 3 * r["seq_len"] * 256 * 4 > LLC:  # the meter measures the points past the cache only
            r["copy_bytes_per_s_now"] = 1.2e10 if r["seq_len"] == 131072 else 3.9e10
    roofs = [{"device": "cpu", "threads": 1, "copy_bytes_per_s": 4e10, "gemm_flops_per_s": 1e11}]
    for r in records:
        if r["seq_len"] == 131072:
            r.update(time_median=16 * 131072 * 256 / 1.2e10, time_p20=16 * 131072 * 256 / 1.2e10,
                     time_p80=16 * 131072 * 256 / 1.2e10)
    results = write_results(tmp_path / "r", records, _env(roofs=roofs))
    frame, _ = load([str(results)])
    slumps = asymptotics.bandwidth_slumps(frame)
    assert slumps["checked"] == 4  # N = 16384 ... 131072 carry a same-time copy
    assert [(p["impl"], p["seq_len"]) for p in slumps["points"]] == [("eager", 131072)]
    row, = asymptotics.streaming_bandwidth(frame)
    assert row["share_median"] == pytest.approx(0.3, rel=1e-3)
    assert row["share_now_median"] == pytest.approx(1.0, rel=1e-3) and row["points_now"] == 1
    build_report([str(results)], str(tmp_path / "out"))
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "Memory-bandwidth slumps: 1 of 4 timed points past the LLC" in text
    assert "N = 131072 D = 256 B = 1: 12 GB/s of 40 GB/s" in text
    assert "100% of the copy bandwidth measured right after each point (median of 1)" in text


def test_a_run_without_same_time_copies_says_nothing_of_slumps(tmp_path):
    frame, _ = load([str(write_results(tmp_path, _cache_step_records(), _env()))])
    assert asymptotics.bandwidth_slumps(frame) is None
    assert all("share_now_median" not in r for r in asymptotics.streaming_bandwidth(frame))


def test_above_the_copy_bandwidth_is_called_cache_resident_only_where_the_inputs_fit_the_cache(tmp_path):
    """A point above the run's copy reading with inputs past the LLC says the copy reading was low; the old
    sentence called a 200 MB working set 'likely stayed in cache' (reports/cpu, stream, 2 threads)."""
    from fastformer_bench.report.sections import throughput

    def sentence(n: int) -> str:
        base = _cache_step_records()[0]
        t = 1e-9 * n  # bytes_min / time far above the env's copy bandwidth at every N
        record = {**base, "point_id": f"fwd-{n}", "mode": "fwd", "seq_len": n, "width": 256, "heads": 8,
                  "batch": 1, "time_median": t, "time_p20": t, "time_p80": t, "samples": [t] * 3}
        frame, _ = load([str(write_results(tmp_path / str(n), [record], _env()))])
        row = next(r for r in analysis.throughput(frame) if r["impl"] == "eager")
        assert row["fraction_of_copy"] > 1
        return throughput.bandwidth_sentence(row)

    assert "likely stayed in cache" in sentence(2048)  # 3 columns x 2048 x 256 x 4 bytes: 6 MiB, inside 32 MiB
    past = sentence(65536)
    assert "likely stayed in cache" not in past and "the copy reading, not a cache, is what to doubt" in past


def test_the_finding_takes_the_roofs_matching_the_reads_and_writes_where_the_run_measured_them(tmp_path):
    """A forward that mostly reads, past the cache, at 1.2x bytes_min over the copy reading (the 103 % of
    reports/cpu's stream fwd_bwd): against the read and write roofs it is below 100 %, and no sentence doubts a roof;
    a point beyond those roofs too still gets one."""
    from fastformer_bench.report.sections import throughput

    read_bw, write_bw, copy = 20e9, 24e9, 15e9
    roofs = [{"device": "cpu", "threads": 2, "copy_bytes_per_s": copy, "read_bytes_per_s": read_bw,
              "write_bytes_per_s": write_bw, "write_method": "non-temporal"}]

    def row(n: int, seconds_per_byte_min: float, **env) -> dict:
        base = _cache_step_records()[0]
        read, written = 3 * n * 256 * 4, n * 256 * 4
        t = (read + written) * seconds_per_byte_min
        record = {**base, "point_id": f"mix-{n}", "mode": "fwd", "seq_len": n, "width": 256, "heads": 8,
                  "batch": 1, "threads": 2, "time_median": t, "time_p20": t, "time_p80": t, "samples": [t] * 3,
                  "bytes_read_min": read, "bytes_written_min": written, "bytes_min": read + written}
        frame, _ = load([str(write_results(tmp_path / f"{n}-{seconds_per_byte_min}", [record],
                                           _env(roofs=roofs, copy_bytes_per_s={"cpu": copy}, **env)))])
        return next(r for r in analysis.throughput(frame) if r["impl"] == "eager")

    within = row(65536, 1 / (1.2 * copy))
    assert within["fraction_of_copy"] == pytest.approx(1.2, rel=1e-3)
    expected = (3 / read_bw + 1 / write_bw) / 4 * 1.2 * copy  # the least time at the matching roofs over the time
    assert within["matching_share_max"] == pytest.approx(expected, rel=1e-3) and within["matching_share_max"] < 1
    sentence = throughput.bandwidth_sentence(within)
    assert f"= {round(100 * expected)} % of the roofs matching its reads and writes" in sentence
    assert "doubt" not in sentence and "cache" not in sentence
    beyond = throughput.bandwidth_sentence(row(65536, 1 / (2.0 * copy)))
    assert "above the roof with inputs larger than the last-level cache, so the roof readings, not a cache, are " \
        "what to doubt" in beyond
    # the end-of-run readings twice the start's: the start's were low, and the sentence says how far below it is
    faster = [{**roofs[0], "read_bytes_per_s": 2 * read_bw, "write_bytes_per_s": 2 * write_bw}]
    low = row(65536, 1 / (2.0 * copy), roofs_end=faster)
    assert low["matching_share_best"] == pytest.approx(low["matching_share_max"] / 2, rel=1e-2)
    assert (f"those readings were low (against the run's best readings it is {round(50 * low['matching_share_max'])}"
            " %)") in throughput.bandwidth_sentence(low)
