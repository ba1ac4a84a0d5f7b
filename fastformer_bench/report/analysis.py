"""The numbers behind the report: scaling fits, crossovers, memory limits, FLOP-counter checks, correctness.

Pure pandas/numpy/scipy, no plotting and no torch, so it runs anywhere the results can be read. Every timing
analysis uses ``status == "ok"`` points only: an incorrect point's time is never evidence of anything.
What an implementation is (its baseline rank, expected exponent, display order) comes from its records'
facts (``results.IMPL_FACTS``), never from its name.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from fastformer_bench import axes
from fastformer_bench.report.fmt import count, n_range
from fastformer_bench.report.numbers import num, timed
from fastformer_bench.results import IMPL_FACTS, REFERENCE_OOM, ResultsError

#: how a CUDA point was timed (timing: graph | launch, cache: cold | warm); a CPU point's are UNTIMED ("-")
METHOD = axes.names(axes.METHOD)
UNTIMED = "-"
#: what a report groups by: the slice axes, then the method, so graph- and launch-timed points never share a fit,
#: a figure or a comparison; a key at UNTIMED is left out of every output row (key_dict), as before the method axes
SLICE = axes.names(axes.SLICE) + METHOD
SHAPE = axes.names(axes.SHAPE)
#: what must agree for an additive point and a softmax point to be compared (softmax has no column count)
MATCH = [name for name in axes.names(axes.SLICE, axes.LENGTH, axes.SHAPE) if name != "columns"] + METHOD
MIN_FIT_POINTS = 3
FIT_RULE = ("log-log OLS of the value against N; a time fit uses the N whose inputs exceed the last-level cache "
            f"(LLC) when at least {MIN_FIT_POINTS} distinct N do (range 'past LLC': memory, not cache, bandwidth), "
            "else, like every peak-memory fit, the top half of the distinct N values measured for that group "
            f"(range 'top half'; at least {MIN_FIT_POINTS}; groups with fewer distinct N are not fitted); "
            "95% CI = slope +/- t(0.975, n-2) * stderr")
PAST_LLC, TOP_HALF = "past LLC", "top half"
#: bytes per element of each input dtype (the inputs' size decides whether a point is past the cache)
ITEM_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
FLOAT_COLUMNS = ["time_median", "time_p20", "time_p80", "compile_s", "peak_bytes", "flops", "flops_fvcore",
                 "flops_counter", "bytes_min", "max_abs_err", "max_rel_err", "energy_j", "tolerance", "copy_bw",
                 "gemm_flops", "llc_bytes", "copy_bytes_per_s_now", "copy_bw_end", "bytes_read_min",
                 "bytes_written_min", "read_bw", "write_bw", "read_bw_end", "write_bw_end"]
INT_COLUMNS = ["batch", "seq_len", "width", "heads"]
TEXT_COLUMNS = ["impl", "family", "device", "dtype", "mode", "scope", "status"]


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed copy of the loaded records; raises ResultsError for records the report cannot interpret."""
    f = frame.copy()
    for col in FLOAT_COLUMNS + ["columns", "preset", "point_id", "flops_notes", "reason", *IMPL_FACTS,
                                "quantities"]:
        if col not in f.columns:
            f[col] = None
    for col in TEXT_COLUMNS:
        if f[col].isna().any():
            raise ResultsError(f"a record has no value for {col!r}; the results are not fastformer-bench records.")
        f[col] = f[col].astype(str)
    for col in INT_COLUMNS:
        values = pd.to_numeric(f[col], errors="coerce")
        if values.isna().any() or (values <= 0).any() or (values != values.round()).any():
            raise ResultsError(f"a record has a {col!r} that is not a positive integer.")
        f[col] = values.astype("int64")
    # Internally 0 means "no column count" (softmax records may carry none); outputs turn it back into None.
    columns = pd.to_numeric(f["columns"], errors="coerce")
    if (columns.dropna() < 0).any() or (columns.dropna() != columns.dropna().round()).any():
        raise ResultsError("a record has a 'columns' value that is not a non-negative integer.")
    f["columns"] = columns.fillna(0).astype("int64")
    if not f["masked"].map(lambda v: isinstance(v, bool | np.bool_)).all():
        raise ResultsError("a record has a 'masked' value that is not true or false.")
    f["masked"] = f["masked"].astype(bool)
    for col in FLOAT_COLUMNS:
        f[col] = pd.to_numeric(f[col], errors="coerce").astype("float64")
    f["preset"] = f["preset"].map(lambda v: v if isinstance(v, str) else "")
    f["point_id"] = f["point_id"].astype(str)
    if "threads" in f.columns:  # 0: not recorded (a grouping key must not be NaN: groupby would drop the point)
        threads = pd.to_numeric(f["threads"], errors="coerce")
        f["threads"] = threads.where(threads > 0).fillna(0).astype("int64")
    for col in METHOD:  # UNTIMED: a CPU point, or a CUDA one before these axes (grouping keys must not be NaN)
        values = f[col] if col in f.columns else pd.Series([None] * len(f), index=f.index, dtype=object)
        f[col] = values.map(lambda v: v if isinstance(v, str) and v else UNTIMED)
    if "allocator" in METHOD:  # a point naming warm was measured as one naming none (axes.ALLOCATORS): one slice
        f.loc[f["allocator"] == "warm", "allocator"] = UNTIMED
    f["input_bytes"] = input_bytes(f)
    return f.sort_values(SLICE + ["impl"] + SHAPE + ["seq_len", "point_id"], kind="stable").reset_index(drop=True)


def input_bytes(f: pd.DataFrame) -> pd.Series:
    """Bytes of a point's inputs: C columns (three for softmax attention) of B x N x D at the core scope, the one
    B x N x D input at the layer scope (its weights are small beside it at the sizes where caches matter)."""
    per_element = f["dtype"].map(ITEM_BYTES).astype("float64")
    tensors = np.where(f["scope"] == "layer", 1, np.where(f["columns"] > 0, f["columns"], 3))
    return (tensors * f["batch"] * f["seq_len"] * f["width"] * per_element).astype("float64")


def past_llc(f: pd.DataFrame) -> pd.Series:
    """Whether each point's inputs exceed its machine's last-level cache (False where the LLC is unknown: NaN)."""
    return f["input_bytes"] > f["llc_bytes"]


def roof_time(t: pd.DataFrame, read: str, write: str) -> pd.Series:
    """Seconds the point's least reads and writes take at the read and write roofs (NaN where a count or a roof is
    missing): the roof that matches the point's traffic, where the copy roof would bill a forward that mostly
    reads at a copy's rate."""
    ok = (t["bytes_read_min"] > 0) & (t["bytes_written_min"] >= 0) & (t[read] > 0) & (t[write] > 0)
    return least_seconds(t["bytes_read_min"], t["bytes_written_min"], t[read], t[write]).where(ok)


def add_matching_shares(t: pd.DataFrame) -> None:
    """Adds to ``t`` each point's share of the matching roofs read at the run's start (``share_matching``) and of
    the faster of each roof's start and end readings (``read_best``, ``write_best``, ``share_matching_best``): the
    host's bandwidth moves within a run."""
    t["read_best"] = t[["read_bw", "read_bw_end"]].max(axis=1, skipna=True)
    t["write_best"] = t[["write_bw", "write_bw_end"]].max(axis=1, skipna=True)
    t["share_matching"] = roof_time(t, "read_bw", "write_bw") / t["time_median"]
    t["share_matching_best"] = roof_time(t, "read_best", "write_best") / t["time_median"]


def least_seconds(read, written, read_per_s, write_per_s):
    """Seconds ``read`` bytes take at the read roof plus ``written`` bytes at the write roof: the least time of a
    call's traffic (numbers or Series alike)."""
    return read / read_per_s + written / write_per_s


def _whole(value) -> int | None:
    # pandas turns a column of ints with a None in it into floats with NaN
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) \
        else int(value)


def impl_facts(frame: pd.DataFrame) -> dict[str, dict]:
    """impl -> {family, complexity, baseline_rank, expected_exponent, display_order}, as its records say.

    Records of one implementation from different runs should agree; where they do not, the first in the
    prepared order wins. A fact a record lacks is None (no baseline, no expectation, drawn after the others).
    """
    facts = {}
    for impl, g in frame.groupby("impl", sort=True):
        r = g.iloc[0]
        exponent = r["expected_exponent"]
        facts[impl] = {"family": r["family"], "complexity": r["complexity"] if isinstance(r["complexity"], str)
                       else None, "baseline_rank": _whole(r["baseline_rank"]),
                       "expected_exponent": list(exponent) if isinstance(exponent, list | tuple) else None,
                       "display_order": _whole(r["display_order"])}
    return facts


def impl_order(impls, facts: dict[str, dict]) -> list[str]:
    """``impls`` in display order (the registry's); those without one after the others, by name."""
    def key(impl):
        order = facts.get(impl, {}).get("display_order")
        return (order is None, order or 0, impl)
    return sorted(set(impls), key=key)


def baselines(facts: dict[str, dict]) -> list[str]:
    """The implementations with a baseline rank, primary (lowest rank) first."""
    return sorted((i for i, f in facts.items() if f["baseline_rank"] is not None),
                  key=lambda i: (facts[i]["baseline_rank"], i))


def key_dict(names: list[str], values) -> dict:
    values = values if isinstance(values, tuple) else (values,)
    out = {name: num(v) if not isinstance(v, str) else v for name, v in zip(names, values)
           if not (name in METHOD and v == UNTIMED)}
    if "columns" in out and out["columns"] == 0:
        out["columns"] = None
    return out


def large_n(ns) -> list[int] | None:
    """The N values a scaling fit uses (the top half, at least MIN_FIT_POINTS), or None if too few."""
    ns = sorted({int(n) for n in ns})
    if len(ns) < MIN_FIT_POINTS:
        return None
    return ns[-max(MIN_FIT_POINTS, math.ceil(len(ns) / 2)):]


def fit_loglog(x, y) -> dict:
    """OLS slope of log y on log x with its 95% confidence interval (t distribution, n - 2 dof)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    res = stats.linregress(lx, ly)
    dof = len(lx) - 2
    half = float(stats.t.ppf(0.975, dof) * res.stderr) if dof > 0 else math.nan
    return {"slope": num(res.slope, 4), "ci_low": num(res.slope - half, 4), "ci_high": num(res.slope + half, 4),
            "stderr": num(res.stderr, 4), "r2": num(res.rvalue**2, 4), "n_points": len(lx)}


def fit_range(g: pd.DataFrame, quantity: str) -> tuple[list[int] | None, str]:
    """The N a fit of one group uses and the rule that chose them (PAST_LLC or TOP_HALF); None if too few N.

    A time measured while the inputs still fit in the last-level cache times the cache, not memory: fitted across
    that transition, a linear implementation looks superlinear. So a time fit keeps to the N past the LLC when
    there are enough of them.
    """
    if quantity == "time":
        llc = g["llc_bytes"].max()
        if np.isfinite(llc) and llc > 0:
            past = sorted({int(n) for n in g.loc[g["input_bytes"] > llc, "seq_len"]})
            if len(past) >= MIN_FIT_POINTS:
                return past, PAST_LLC
    return large_n(g["seq_len"]), TOP_HALF


def scaling_fits(frame: pd.DataFrame, quantity: str) -> list[dict]:
    """Exponent of time ("time") or peak memory ("memory") in N per slice, implementation and shape."""
    if quantity == "time":
        data, value = timed(frame), "time_median"
    else:
        ok = frame[frame["status"] == "ok"]
        data, value = ok[np.isfinite(ok["peak_bytes"]) & (ok["peak_bytes"] > 0)], "peak_bytes"
    keys = SLICE + ["impl"] + SHAPE
    facts = impl_facts(frame)
    rows = []
    for key, g in data.groupby(keys, sort=True):
        ns, rule = fit_range(g, quantity)
        if ns is None:
            continue
        sel = g[g["seq_len"].isin(ns)]
        llc = g["llc_bytes"].max()
        rows.append({**key_dict(keys, key), "complexity": facts.get(key[len(SLICE)], {}).get("complexity"),
                     "quantity": quantity, "n_min": ns[0], "n_max": ns[-1],
                     "n_values": len(ns), "fit_range": rule, "llc_bytes": num(llc) if np.isfinite(llc) else None,
                     "inputs_max_bytes": num(g["input_bytes"].max()), **fit_loglog(sel["seq_len"], sel[value])})
    return rows


def crossing(ns: list[int], ratio: list[float]) -> dict:
    """Where time(impl)/time(baseline) drops below 1 and stays there, log-interpolated in N."""
    faster = [r < 1 for r in ratio]
    if all(faster):
        return {"crossover_n": None, "outcome": "always_faster",
                "reason": f"faster at every matched N ({n_range(ns[0], ns[-1])})"}
    if not faster[-1]:
        outcome = "never_faster" if not any(faster) else "not_staying_faster"
        return {"crossover_n": None, "outcome": outcome,
                "reason": f"slower at the largest matched N = {count(ns[-1])} (time ratio {ratio[-1]:.3g})"}
    i = max(k for k, f in enumerate(faster) if not f)
    x0, x1, r0, r1 = math.log(ns[i]), math.log(ns[i + 1]), math.log(ratio[i]), math.log(ratio[i + 1])
    at = math.exp(x0 + (0.0 - r0) * (x1 - x0) / (r1 - r0)) if r1 != r0 else ns[i + 1]
    return {"crossover_n": num(at, 4), "outcome": "crossed", "slower_at_n": ns[i], "faster_from_n": ns[i + 1],
            "reason": None}


def crossovers(frame: pd.DataFrame, facts: dict[str, dict]) -> list[dict]:
    """Crossover N of every additive implementation against each baseline in rank order, matched point by point."""
    t = timed(frame)
    keys = SLICE + ["impl"] + SHAPE
    add = t[t["family"] == "additive"].groupby(keys + ["seq_len"])["time_median"].median().reset_index()
    rows = []
    for base in baselines(facts):
        b = t[t["impl"] == base].groupby(MATCH)["time_median"].median().rename("base_time").reset_index()
        merged = add.merge(b, on=MATCH)
        for key, g in merged.groupby(keys, sort=True):
            g = g.sort_values("seq_len")
            ns = [int(n) for n in g["seq_len"]]
            if len(ns) < 2:  # one matched N says nothing about where the curves cross
                continue
            ratio = list(g["time_median"] / g["base_time"])
            rows.append({**key_dict(keys, key), "baseline": base, "n_matched": len(ns),
                         "time_ratio": [[n, num(r, 4)] for n, r in zip(ns, ratio)], **crossing(ns, ratio)})
    return rows


def oom_limits(frame: pd.DataFrame) -> list[dict]:
    """Largest N that ran (status ok) below the smallest out-of-memory N, per implementation and shape."""
    keys = SLICE + ["impl"] + SHAPE
    rows = []
    # an oom of the float64 check says nothing of the implementation's own reach
    reason = frame["reason"] if "reason" in frame.columns else pd.Series("", index=frame.index)
    own = ~(frame["status"].eq("oom") & reason.fillna("").astype(str).str.startswith(REFERENCE_OOM))
    for key, g in frame[frame["status"].isin(["ok", "oom"]) & own].groupby(keys, sort=True):
        oom = g.loc[g["status"] == "oom", "seq_len"]
        if oom.empty and g["seq_len"].nunique() < 2:  # a single-N group (a C or mask probe) has no N limit to show
            continue
        first_oom = int(oom.min()) if len(oom) else None
        ok = g.loc[g["status"] == "ok", "seq_len"]
        below = ok[ok < first_oom] if first_oom is not None else ok
        rows.append({**key_dict(keys, key), "largest_ok_n": int(below.max()) if len(below) else None,
                     "first_oom_n": first_oom, "largest_ok_peak_bytes": num(
                         g.loc[(g["status"] == "ok") & (g["seq_len"] == below.max()), "peak_bytes"].max())
                     if len(below) else None})
    return rows


def _ops(notes: pd.Series, field: str) -> list[str]:
    found = set()
    for note in notes:
        if isinstance(note, dict) and isinstance(note.get(field), list):
            found.update(str(op) for op in note[field])
    return sorted(found)


def _ratio_stats(ratio: pd.Series) -> dict:
    ratio = ratio[np.isfinite(ratio)]
    if ratio.empty:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(ratio), "median": num(ratio.median(), 4), "min": num(ratio.min(), 4),
            "max": num(ratio.max(), 4)}


def flop_counters(frame: pd.DataFrame) -> list[dict]:
    """fvcore (x2, it counts one per multiply-add) and FlopCounterMode against the analytic count."""
    keys = ["device", "impl", "mode", "scope"]
    data = frame[np.isfinite(frame["flops"]) & (frame["flops"] > 0)]
    rows = []
    for key, g in data.groupby(keys, sort=True):
        rows.append({**key_dict(keys, key),
                     "fvcore_ratio": _ratio_stats(2 * g["flops_fvcore"] / g["flops"]),
                     "counter_ratio": _ratio_stats(g["flops_counter"] / g["flops"]),
                     "fvcore_skipped": _ops(g["flops_notes"], "fvcore_skipped"),
                     "counter_missing": _ops(g["flops_notes"], "counter_missing")})
    return rows


def correctness(frame: pd.DataFrame) -> dict:
    """Largest errors and status counts per implementation, and every incorrect point."""
    per_impl = []
    for impl, g in frame.groupby("impl", sort=True):
        counts = g["status"].value_counts()
        per_impl.append({"impl": impl, "points": len(g), "statuses": {s: int(c) for s, c in sorted(counts.items())},
                         "max_abs_err": num(g["max_abs_err"].max(), 4), "max_rel_err": num(g["max_rel_err"].max(), 4),
                         "tolerance_max": num(g["tolerance"].max(), 4)})
    bad = frame[frame["status"] == "incorrect"]
    incorrect = [{**key_dict(SLICE + ["impl"] + SHAPE + ["seq_len"], tuple(r[k] for k in
                  SLICE + ["impl"] + SHAPE + ["seq_len"])), "point_id": r["point_id"],
                  "max_abs_err": num(r["max_abs_err"], 4), "max_rel_err": num(r["max_rel_err"], 4),
                  "tolerance": num(r["tolerance"], 4), "reason": r["reason"] if isinstance(r["reason"], str) else None}
                 for _, r in bad.iterrows()]
    return {"per_impl": per_impl, "incorrect": incorrect}


def _miss_reason(fit: dict, low: float | None, high: float | None) -> str:
    span = f"N = {n_range(fit['n_min'], fit['n_max'])}"
    if fit.get("fit_range") == TOP_HALF and fit.get("llc_bytes"):
        span += (f", where fewer than {MIN_FIT_POINTS} N had inputs past the last-level cache "
                 f"(largest inputs {fit['inputs_max_bytes'] / fit['llc_bytes']:.2g}× the LLC)")
    if low is not None and fit["slope"] < low:
        why = (f"the fitted range ({span}) probably did not reach the asymptotic regime: per-call overheads "
               "(dispatch, launches, allocation) or lower-order terms still carry much of the time")
    else:
        why = (f"time grows faster than expected over {span}: likely the working set leaving a cache level, "
               "allocator or memory-bandwidth effects, or timing noise")
    lo_ci, hi_ci = fit["ci_low"], fit["ci_high"]
    if lo_ci is not None and hi_ci is not None and (
            (low is not None and lo_ci <= low <= hi_ci) or (high is not None and lo_ci <= high <= hi_ci)):
        why += f"; the 95% CI [{lo_ci:.2f}, {hi_ci:.2f}] reaches the target, so noise alone could explain it"
    return why


def _verdict(fit: dict, low: float | None, high: float | None, holds: bool) -> str:
    """'met'; 'missed' where the fit's 95 % interval lies wholly outside the target; else 'undecided': the
    points cannot tell the exponent from the target."""
    if holds:
        return "met"
    lo_ci, hi_ci = fit["ci_low"], fit["ci_high"]
    if lo_ci is None or hi_ci is None:
        return "undecided"
    outside = (high is not None and lo_ci > high) or (low is not None and hi_ci < low)
    return "missed" if outside else "undecided"


def target_checks(time_fits: list[dict], facts: dict[str, dict]) -> list[dict]:
    """Each time fit of an implementation with an expected exponent, and whether it holds."""
    rows = []
    for fit in time_fits:
        expected = facts.get(fit["impl"], {}).get("expected_exponent")
        if expected is None:
            continue
        low, high = expected
        holds = (low is None or fit["slope"] >= low) and (high is None or fit["slope"] <= high)
        target = f"{low:g}-{high:g}" if high is not None else f">= {low:g}"
        rows.append({**{k: fit[k] for k in SLICE + ["impl"] + SHAPE + ["n_min", "n_max", "n_values", "fit_range",
                                                                         "slope", "ci_low", "ci_high", "llc_bytes",
                                                                         "inputs_max_bytes"] if k in fit},
                     "target": target, "holds": bool(holds), "verdict": _verdict(fit, low, high, holds),
                     "reason": None if holds else _miss_reason(fit, low, high)})
    return rows


def throughput(frame: pd.DataFrame) -> list[dict]:
    """Best achieved bandwidth (bytes_min / time) and FLOP/s per implementation, against the copy bandwidth and,
    where the run measured read and write roofs, the best share of the roof matching each point's reads and
    writes (the copy's 2 bytes per byte bill a forward that mostly reads at a copy's rate)."""
    t = timed(frame).copy()
    t["bw"] = t["bytes_min"] / t["time_median"]
    t["flop_rate"] = t["flops"] / t["time_median"]
    t["past_llc"] = past_llc(t)
    add_matching_shares(t)
    keys = SLICE + ["impl"]
    rows = []
    for key, g in t.groupby(keys, sort=True):
        bw, rate = g.dropna(subset=["bw"]), g.dropna(subset=["flop_rate"])
        best = bw.loc[bw["bw"].idxmax()] if len(bw) else None
        copy = g["copy_bw"].max()
        rows.append({**key_dict(keys, key),
                     "best_bytes_per_s": num(best["bw"], 4) if best is not None else None,
                     "best_bw_at": {"seq_len": int(best["seq_len"]), "width": int(best["width"]),
                                    "past_llc": bool(best["past_llc"])}
                     if best is not None else None,
                     "copy_bytes_per_s": num(copy, 4),
                     "fraction_of_copy": num(best["bw"] / copy, 3) if best is not None and copy > 0 else None,
                     "best_flops_per_s": num(rate["flop_rate"].max(), 4) if len(rate) else None,
                     **_best_matching(g)})
    return rows


def _best_matching(g: pd.DataFrame) -> dict:
    """The best share of the matching read/write roof in one slice, where and against which roofs; {} where no
    point has both counts and both roofs (runs before those roofs)."""
    shares = g["share_matching"].dropna()
    if shares.empty:
        return {}
    best = g.loc[shares.idxmax()]
    return {"matching_share_max": num(best["share_matching"], 3),
            "matching_share_best": num(best["share_matching_best"], 3),
            "matching_at": {"seq_len": int(best["seq_len"]), "width": int(best["width"]),
                            "past_llc": bool(best["past_llc"])},
            "read_bytes_per_s": num(best["read_bw"], 4), "write_bytes_per_s": num(best["write_bw"], 4)}


def fwd_bwd(frame: pd.DataFrame) -> list[dict]:
    """Time of forward+backward over forward alone, at matching points; also over the shapes whose inputs exceed
    the last-level cache alone (``past_llc``): below it the ratio also says whose working set still fits (the
    backward's, its inputs and gradients and grad_out, is about twice the forward's), not only how much work
    the backward does."""
    t = timed(frame)
    per_slice = [name for name in SLICE if name != "mode"] + ["impl"]
    keys = per_slice + SHAPE + ["seq_len"]
    per = t.groupby(keys + ["mode"])["time_median"].median().unstack("mode")
    if "fwd" not in per.columns or "fwd_bwd" not in per.columns:
        return []
    ratio = (per["fwd_bwd"] / per["fwd"]).dropna().rename("ratio").reset_index()
    past = t.assign(past_llc=past_llc(t))
    ratio = ratio.join(past.groupby(keys)["past_llc"].max(), on=keys)
    rows = []
    for key, g in ratio.groupby(per_slice, sort=True):
        beyond = g[g["past_llc"].astype(bool)]
        rows.append({**key_dict(per_slice, key), **_ratio_stats(g["ratio"]),
                     "n_values": sorted(int(n) for n in g["seq_len"].unique()),
                     "shapes": [{"seq_len": int(r.seq_len), "width": int(r.width), "ratio": num(r.ratio, 4),
                                 "past_llc": bool(r.past_llc)}
                                for r in g.sort_values(["width", "seq_len"]).itertuples()],
                     "past_llc": _ratio_stats(beyond["ratio"]) if len(beyond) else None})
    return rows


def column_effect(frame: pd.DataFrame) -> list[dict]:
    """Time at the largest over the smallest column count C, at fixed shapes with at least two C."""
    t = timed(frame)
    t = t[(t["family"] == "additive") & (t["columns"] > 0)]
    keys = SLICE + ["impl", "batch", "seq_len", "width", "heads", "masked"]
    rows = []
    for key, g in t.groupby(keys, sort=True):
        per_c = g.groupby("columns")["time_median"].median()
        if len(per_c) < 2:
            continue
        c0, c1 = int(per_c.index.min()), int(per_c.index.max())
        rows.append({**key_dict(keys, key), "c_min": c0, "c_max": c1,
                     "time_ratio": num(per_c[c1] / per_c[c0], 4),
                     "steps_ratio": num((c1 - 1) / (c0 - 1), 4) if c0 > 1 else None,
                     "times": [[int(c), num(v, 4)] for c, v in per_c.items()]})
    return rows


def token_budget(frame: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """Layer-scope points at a fixed token budget B*N: the paper-fig2 preset, else the best such group."""
    t = timed(frame)
    t = t[t["scope"] == "layer"].assign(tokens=lambda d: d["batch"] * d["seq_len"])
    fig2 = t[t["preset"] == "paper-fig2"]
    if len(fig2):
        t = fig2
    best, best_rank = None, None
    for tokens, g in t.groupby("tokens", sort=True):
        count = g["seq_len"].nunique()
        # Prefer the paper's 65,536 budget, then the budget with the most N values; B must vary with N.
        rank = (int(tokens) == 65536, count)
        if count >= 3 and g["batch"].nunique() > 1 and (best_rank is None or rank > best_rank):
            best, best_rank = int(tokens), rank
    if best is None:
        return t.iloc[0:0], None
    return t[t["tokens"] == best], best


def budget_summary(frame: pd.DataFrame) -> dict | None:
    data, tokens = token_budget(frame)
    if tokens is None:
        return None
    # every series is layer scope and B varies with N at a fixed B x N: neither tells series apart
    keys = [name for name in SLICE if name != "scope"] + ["impl"] + [name for name in SHAPE if name != "batch"]
    series = []
    for key, g in data.groupby(keys, sort=True):
        per = g.groupby(["seq_len", "batch"])["time_median"].median()
        series.append({**key_dict(keys, key), "points": [[int(n), int(b), num(v, 4)] for (n, b), v in per.items()]})
    return {"tokens": tokens, "series": series}
