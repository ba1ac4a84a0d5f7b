"""What the largest sizes say: t = a + bN + cN² fits, speedups at fixed N, and bandwidth against the roofs.

The exponent fits (analysis.scaling_fits) say how time grows; these say by how much, in the units a user plans
with (seconds per token, times faster than SDPA at N = 8192, share of the copy bandwidth). Pure pandas/scipy.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

from fastformer_bench.report.analysis import (
    PAST_LLC,
    SHAPE,
    SLICE,
    add_matching_shares,
    crossovers,
    impl_facts,
    key_dict,
    roof_time,
)
from fastformer_bench.report.numbers import num, timed
from fastformer_bench.results import SLUMP_SHARE

#: at least one degree of freedom beyond the three coefficients, or the fit has no error estimate
MIN_POLY_POINTS = 4
POLY_RULE = ("t = a + b·N + c·N² by least squares on relative errors (each point weighted by 1/t, so that the "
             f"small-N points count as much as the large ones) over the N whose inputs exceed the LLC when at least "
             f"{MIN_POLY_POINTS} do (range 'past LLC'), else over every N measured for the group (range 'all N'; "
             f"at least {MIN_POLY_POINTS} distinct N); 95% CIs from the covariance with t(0.975, n-3)")
#: the N the issue of record asks speedups at (a common long-context length), beside the largest N both ran
SPEEDUP_N = 8192
#: the elements B·N·D from which a point counts as streaming (2^25 fp32 elements per input = 128 MiB: past any
#: CPU's last-level cache today)
STREAMING_ELEMENTS = 2**25


def _quadratic(x, a, b, c):
    return a + b * x + c * x * x


def fit_quadratic(ns, times) -> dict:
    """Coefficients a (s), b (s per token) and c (s per token²) with 95% CIs; N and t are scaled to O(1) for the
    solver and the coefficients scaled back."""
    n, t = np.asarray(ns, dtype=float), np.asarray(times, dtype=float)
    n_scale, t_scale = n.max(), t.max()
    x, y = n / n_scale, t / t_scale
    params, cov = optimize.curve_fit(_quadratic, x, y, p0=(y.min(), y.max(), 0.0), sigma=y, absolute_sigma=False)
    half = stats.t.ppf(0.975, len(x) - 3) * np.sqrt(np.clip(np.diag(cov), 0, None))
    scales = np.array([t_scale, t_scale / n_scale, t_scale / n_scale**2])
    values, halves = params * scales, half * scales
    predicted = _quadratic(x, *params) * t_scale
    at_max = _quadratic(1.0, *params)
    out = {"n_points": len(n), "n_min": int(n.min()), "n_max": int(n.max()),
           "max_rel_residual": num(np.max(np.abs(predicted / t - 1)), 3),
           "quadratic_share_at_n_max": num(params[2] / at_max, 3) if at_max > 0 else None}
    for name, value, h in zip("abc", values, halves):
        out[name] = num(value, 4)
        out[f"{name}_ci"] = [num(value - h, 4), num(value + h, 4)] if math.isfinite(h) else None
    return out


def polynomial_fits(frame: pd.DataFrame) -> list[dict]:
    """t = a + bN + cN² per slice, implementation and shape, over every N measured."""
    keys = SLICE + ["impl"] + SHAPE
    facts = impl_facts(frame)
    rows = []
    for key, g in timed(frame).groupby(keys, sort=True):
        per_n = g.groupby("seq_len")["time_median"].median()
        llc, rule = g["llc_bytes"].max(), "all N"
        if np.isfinite(llc) and llc > 0:  # as the exponent fits: a cache-to-memory step is no N² term
            past = sorted({int(n) for n in g.loc[g["input_bytes"] > llc, "seq_len"]})
            if len(past) >= MIN_POLY_POINTS:
                per_n, rule = per_n[per_n.index.isin(past)], PAST_LLC
        if len(per_n) < MIN_POLY_POINTS:
            continue
        try:
            with warnings.catch_warnings():  # a covariance the solver could not estimate is no fit, not a warning
                warnings.simplefilter("error", optimize.OptimizeWarning)
                fit = fit_quadratic(per_n.index, per_n.values)
        except (RuntimeError, ValueError, optimize.OptimizeWarning):  # did not converge: no row
            continue
        rows.append({**key_dict(keys, key), "complexity": facts.get(key[len(SLICE)], {}).get("complexity"),
                     "fit_range": rule, **fit})
    return rows


def speedups(frame: pd.DataFrame) -> list[dict]:
    """Every additive implementation against each softmax baseline: time ratio at N = SPEEDUP_N and at the
    largest N both ran (from the matched crossover series)."""
    rows = []
    facts = impl_facts(frame)
    for c in crossovers(frame, facts):
        ratio = {int(n): r for n, r in c["time_ratio"] if r}
        largest = max(ratio)
        rows.append({k: v for k, v in c.items() if k not in ("time_ratio", "crossover_n", "outcome", "reason",
                                                              "slower_at_n", "faster_from_n", "n_matched")}
                    | {"complexity": facts.get(c["impl"], {}).get("complexity"), "speedup_at_n": SPEEDUP_N,
                       "speedup": num(1 / ratio[SPEEDUP_N], 4) if SPEEDUP_N in ratio else None,
                       "largest_n": largest, "speedup_at_largest_n": num(1 / ratio[largest], 4)})
    return rows


def _best_copies(frame: pd.DataFrame, points: pd.DataFrame) -> pd.Series:
    """For each of ``points``, the highest copy bandwidth its run measured on its device at its thread count: the
    roofs at the start and the end and every copy right after a point. A host's copy bandwidth can move by half
    within a run (the 2-core reference VM, 2026-12-04: 19.3 to 31.7 GB/s at one thread), so a share of the start
    roof alone can flatter; a share of the best copy is the one no reading of the run contradicts."""
    keys = [k for k in ("run_id", "device", "threads") if k in frame.columns]
    readings = pd.concat([frame[keys + [c]].rename(columns={c: "copy"}) for c in
                          ("copy_bw", "copy_bw_end", "copy_bytes_per_s_now") if c in frame.columns])
    readings = readings[readings["copy"] > 0]
    best = readings.groupby(keys, dropna=False)["copy"].max().reset_index()
    return points[keys].merge(best, on=keys, how="left")["copy"].set_axis(points.index).astype(float)


def streaming_bandwidth(frame: pd.DataFrame) -> list[dict]:
    """Per slice and implementation, bytes_min / time as a share of the same run's copy bandwidth at the points
    with B·N·D >= STREAMING_ELEMENTS (inputs far past the cache), and the arithmetic intensity against the GEMM
    roof: the numbers a roofline places each implementation by."""
    t = timed(frame)
    t = t[(t["batch"] * t["seq_len"] * t["width"] >= STREAMING_ELEMENTS) & (t["bytes_min"] > 0)
          & (t["copy_bw"] > 0)].copy()
    t["copy_best"] = _best_copies(frame, t)
    t["share"] = t["bytes_min"] / t["time_median"] / t["copy_bw"]
    t["share_best"] = t["bytes_min"] / t["time_median"] / t["copy_best"]
    t["share_now"] = t["bytes_min"] / t["time_median"] / t["copy_bytes_per_s_now"]
    t["flop_rate"] = t["flops"] / t["time_median"]
    add_matching_shares(t)
    rows = []
    for key, g in t.groupby(SLICE + ["impl"], sort=True):
        gemm = g["gemm_flops"].max()
        now = g["share_now"].dropna()
        # only where the run measured it (older runs did not): the share of the copy bandwidth at the same time
        same_time = {"share_now_median": num(now.median(), 3), "points_now": len(now)} if len(now) else {}
        best = {"share_best_median": num(g["share_best"].median(), 3), "copy_best": num(g["copy_best"].max(), 4)}
        rows.append({**key_dict(SLICE + ["impl"], key), "points": len(g), **same_time, **best,
                     "n_values": sorted({int(n) for n in g["seq_len"]}),
                     "widths": sorted({int(d) for d in g["width"]}),
                     "share_median": num(g["share"].median(), 3), "share_min": num(g["share"].min(), 3),
                     "share_max": num(g["share"].max(), 3), "copy_bytes_per_s": num(g["copy_bw"].max(), 4),
                     "gemm_flops_per_s": num(gemm, 4) if np.isfinite(gemm) else None,
                     "flops_share_of_gemm": num(g["flop_rate"].max() / gemm, 3)
                     if np.isfinite(gemm) and gemm > 0 and g["flop_rate"].notna().any() else None,
                     "matching": _matching(g)})
    return rows


def roof_share(t: pd.DataFrame) -> pd.Series:
    """Each point's share of its memory roof: the read/write roof matching its traffic where the run measured one,
    else bytes_min over the copy bandwidth (runs before those roofs); NaN where neither can be taken."""
    matching = roof_time(t, "read_bw", "write_bw") / t["time_median"]
    copy = (t["bytes_min"] / t["time_median"] / t["copy_bw"]).where((t["bytes_min"] > 0) & (t["copy_bw"] > 0))
    return matching.fillna(copy)


def _matching(g: pd.DataFrame) -> dict | None:
    """The share of the read/write roof matching each point's traffic (median, min, max), against the run's
    start-of-run roofs and against the faster of its start and end readings; None where no point has both."""
    shares = g["share_matching"].dropna()
    if shares.empty:
        return None
    best = g["share_matching_best"].dropna()
    rows = g.loc[shares.index]
    # the bound if reads and writes overlapped completely: the slower of the two alone, at the best readings
    overlap = (pd.concat([rows["bytes_read_min"] / rows["read_best"], rows["bytes_written_min"] / rows["write_best"]],
                         axis=1).max(axis=1) / rows["time_median"]).dropna()
    methods = sorted({str(m) for m in rows.get("write_method", pd.Series(dtype=object)).dropna()})
    return {"points": len(shares), "share_median": num(shares.median(), 3), "share_min": num(shares.min(), 3),
            "share_max": num(shares.max(), 3), "share_best_median": num(best.median(), 3) if len(best) else None,
            "share_overlap_median": num(overlap.median(), 3) if len(overlap) else None,
            "write_method": methods[0] if len(methods) == 1 else None,
            "read_bytes_per_s": num(g.loc[shares.index, "read_bw"].max(), 4),
            "write_bytes_per_s": num(g.loc[shares.index, "write_bw"].max(), 4)}


def bandwidth_slumps(frame: pd.DataFrame) -> dict | None:
    """The timed points whose same-time copy bandwidth (measured right after each) fell below SLUMP_SHARE of the
    run's roof at their thread count; None when no point carries a same-time measurement."""
    t = timed(frame)
    t = t[(t["copy_bytes_per_s_now"] > 0) & (t["copy_bw"] > 0)]
    if t.empty:
        return None
    low = t[t["copy_bytes_per_s_now"] < SLUMP_SHARE * t["copy_bw"]].sort_values(SLICE + ["impl", "seq_len"])
    return {"share": SLUMP_SHARE, "checked": len(t),
            "points": [{**key_dict(SLICE + ["impl"], tuple(r[c] for c in SLICE + ["impl"])),
                        "seq_len": int(r["seq_len"]), "width": int(r["width"]), "batch": int(r["batch"]),
                        "copy_now": num(r["copy_bytes_per_s_now"], 4), "copy_run": num(r["copy_bw"], 4)}
                       for _, r in low.iterrows()]}
