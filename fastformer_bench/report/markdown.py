"""REPORT.md from the summary dict: environment, conclusions first, figures, tables, conventions.

Everything here is a pure function of ``summary`` (no clock, no paths, fixed number formats), so the same
results always give the same bytes.
"""

from __future__ import annotations

import math

import pandas as pd

from fastformer_bench import axes
from fastformer_bench.report.fmt import si
from fastformer_bench.report.spec import SPECS

#: run.json keys shown first, in this order (each is an environment fact: "triton" is that package's version)
ENV_KEYS = ["python", "torch", "triton", "cpu_model", "threads", "gpu_name", "git_commit", "preset", "argv",
            "copy_bytes_per_s", "roofs", "roofs_end", "last_level_cache_bytes"]
#: shown only when some run recorded them (older runs did not measure them)
OPTIONAL_ENV_KEYS = {"roofs", "roofs_end", "last_level_cache_bytes"}


def _x(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _slice(row: dict) -> str:
    return " ".join(_threads(row) if k == "threads" else str(row[k]) for k in axes.names(axes.SLICE) if k in row)


def _shape(row: dict) -> str:
    parts = [f"B = {row['batch']}"] if "batch" in row else []
    parts += [f"C = {row['columns']}"] if row.get("columns") else []
    return ", ".join(parts + (["masked"] if row.get("masked") else []))


def _ci(row: dict) -> str:
    if row["ci_low"] is None:
        return f"N^{row['slope']:.2f}"
    return f"N^{row['slope']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def _fit_sentence(row: dict, what: str, target: dict | None = None) -> str:
    note = ""
    if target is not None:
        note = f"; expected {target['target']}: " + ("met" if target["holds"] else "**not met**")
    return (f"{row['impl']} {what} grows as {_ci(row)} at width {row['width']} over N = {row['n_min']}–"
            f"{row['n_max']} ({row['n_points']} points{note}).")


def _grouped(rows: list[dict], sentence) -> list[str]:
    """One bullet per slice and shape, the sentences about it nested below."""
    out, header = [], None
    for row in sorted(rows, key=lambda r: (_slice(r), _shape(r))):
        if f"{_slice(row)}, {_shape(row)}" != header:
            header = f"{_slice(row)}, {_shape(row)}"
            out.append(f"- {header}:")
        out.append(f"  - {sentence(row)}")
    return out


def _identity(row: dict) -> tuple:
    return tuple(row.get(k) for k in axes.names(axes.SLICE, axes.IMPLEMENTATION, axes.SHAPE))


def _table(rows: list[dict]) -> str:
    if not rows:
        return "_No data._"
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def environment(runs: list[dict]) -> list[str]:
    lines = ["## Environment", ""]
    if not any(r["env"] for r in runs):
        return lines + ["_No run.json was found next to the results._", ""]
    rows = []
    extra = sorted({k for r in runs for k, v in r["env"].items() if k not in ENV_KEYS
                    and isinstance(v, str | int | float | bool)})
    for key in ENV_KEYS + extra:
        if key in OPTIONAL_ENV_KEYS and all(r["env"].get(key) is None for r in runs):
            continue
        row = {"": key}
        for r in runs:
            value = r["env"].get(key)
            if key in ("roofs", "roofs_end") and isinstance(value, list):
                value = _roofs_text(value)
            elif key == "copy_bytes_per_s" and isinstance(value, dict):
                value = ", ".join(f"{d}: {si(v, 'B/s')}" for d, v in sorted(value.items()))
            elif key == "copy_bytes_per_s" and isinstance(value, int | float):
                value = si(value, "B/s")
            elif isinstance(value, dict):
                value = "; ".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif isinstance(value, list):
                value = " ".join(str(v) for v in value)
            row[r["label"]] = "-" if value is None else str(value).replace("|", "/")[:120]
        rows.append(row)
    return lines + [_table(rows), ""]


def _gemm_text(roof: dict) -> str:
    """'GEMM 90 GFLOP/s', or 'GEMM float32 51 TFLOP/s, bfloat16 790 TFLOP/s' where it was measured per dtype."""
    by_dtype = roof.get("gemm_flops_per_s_by_dtype")
    if isinstance(by_dtype, dict) and by_dtype:
        return "GEMM " + ", ".join(f"{name} {si(rate, 'FLOP/s')}" for name, rate in sorted(by_dtype.items()))
    return f"GEMM {si(roof.get('gemm_flops_per_s'), 'FLOP/s')}"


def _roofs_text(roofs: list) -> str:
    """'cpu x1: copy 40 GB/s, GEMM 90 GFLOP/s; cpu x2: ...' from run.json's roofs list."""
    return "; ".join(f"{r.get('device')} x{r.get('threads')}: copy {si(r.get('copy_bytes_per_s'), 'B/s')}, "
                     f"{_gemm_text(r)}" for r in roofs if isinstance(r, dict))


def _threads(row: dict) -> str:
    count = row.get("threads")
    return f"{count} thread{'s' if count != 1 else ''}" if count else "threads not recorded"


def _speedup_lines(rows: list[dict]) -> list[str]:
    """One line per slice, shape and baseline: each linear additive implementation's speedup at the fixed N and
    at the largest N both ran."""
    out, groups = [], {}
    for r in rows:
        if r.get("complexity") == "linear":
            groups.setdefault((_slice(r), _shape(r), r["width"], r["baseline"]), []).append(r)
    for (slice_, shape, width, baseline), group in sorted(groups.items()):
        group.sort(key=lambda r: -(r["speedup_at_largest_n"] or 0))
        fixed = ", ".join(f"{r['impl']} {r['speedup']:.3g}x" for r in group if r["speedup"] is not None)
        largest = ", ".join(f"{r['impl']} {r['speedup_at_largest_n']:.3g}x (N = {r['largest_n']})" for r in group)
        at = f"at N = {group[0]['speedup_at_n']}: {fixed}; " if fixed else \
            f"none measured beside it at N = {group[0]['speedup_at_n']}; "
        out.append(f"- Speedup over {baseline} ({slice_}, {shape}, width {width}), t({baseline}) / t(impl): {at}"
                   f"at the largest N both ran: {largest}.")
    return out


def _other_copy_readings(row: dict) -> str:
    out = ""
    if row.get("share_now_median") is not None:
        out += (f"; {row['share_now_median'] * 100:.0f}% of the copy bandwidth measured right after each point "
                f"(median of {row['points_now']})")
    if row.get("share_best_median") is not None and row.get("copy_best", 0) > row["copy_bytes_per_s"] * 1.005:
        out += (f"; {row['share_best_median'] * 100:.0f}% of the best copy the run measured at this thread count "
                f"({si(row['copy_best'], 'B/s')})")
    return out


def _slump_lines(slumps: dict | None) -> list[str]:
    """The caveat on points timed while the host's memory bandwidth sagged (measure/bandwidth.py)."""
    if slumps is None:
        return []
    if not slumps["points"]:
        return [f"- Memory bandwidth during the run: the copy bandwidth measured right after each of the "
                f"{slumps['checked']} timed points past the LLC stayed above {slumps['share']:.0%} of the run's."]
    named = "; ".join(f"{p['impl']} ({_slice(p)}) N = {p['seq_len']} D = {p['width']} B = {p['batch']}: "
                      f"{si(p['copy_now'], 'B/s')} of {si(p['copy_run'], 'B/s')}" for p in slumps["points"])
    return [f"- Memory-bandwidth slumps: {len(slumps['points'])} of {slumps['checked']} timed points past the LLC "
            f"were timed while the copy bandwidth measured right after them was below {slumps['share']:.0%} of "
            f"the run's (another tenant of the host streaming memory; no CPU time was taken, so the contention "
            f"check cannot see it): their times are slower than the code, read them against the same-time "
            f"figure. {named}."]


def largest_sizes(s: dict) -> list[str]:
    """Conclusions at the largest sizes: speedups over softmax, bandwidth against the roofs, the N² term."""
    out = _speedup_lines(s.get("speedups", []))
    for r in s.get("streaming", []):
        gemm = (f"; best {r['flops_share_of_gemm'] * 100:.1f}% of the {r.get('dtype', '')} GEMM roof "
                f"{si(r['gemm_flops_per_s'], 'FLOP/s')}") if r["flops_share_of_gemm"] is not None else ""
        out.append(f"- {r['impl']} ({_slice(r)}) at B·N·D >= 2^{int(math.log2(s['streaming_elements']))} "
                   f"(N = {', '.join(map(str, r['n_values']))}): bytes_min / time = {r['share_median'] * 100:.0f}% "
                   f"of the same run's copy bandwidth {si(r['copy_bytes_per_s'], 'B/s')} (median of {r['points']}; "
                   f"{r['share_min'] * 100:.0f}–{r['share_max'] * 100:.0f}%){_other_copy_readings(r)}{gemm}.")
    groups = {}
    for r in s.get("poly_fits", []):
        if r.get("complexity") == "linear" and r["c_ci"] is not None and r["quadratic_share_at_n_max"] is not None:
            groups.setdefault((_slice(r), _shape(r), r["width"], r["fit_range"]), []).append(r)
    for (slice_, shape, width, rule), group in sorted(groups.items()):
        parts = [f"{r['impl']} {r['quadratic_share_at_n_max'] * 100:.0f}% at N = {r['n_max']}"
                 + ("" if r["c_ci"][0] > 0 or r["c_ci"][1] < 0 else " (c's CI includes 0)") for r in group]
        out.append(f"- N² term c·N² / t of the linear implementations ({slice_}, {shape}, width {width}, {rule}): "
                   f"{', '.join(parts)}.")
    return ["", "### At the largest sizes", ""] + out if out else []


def conclusions(s: dict) -> list[str]:
    out = ["## Conclusions", ""]
    statuses = ", ".join(f"{c} {k}" for k, c in s["statuses"].items())
    out.append(f"- {s['points']} points: {statuses}.")
    bad = s["correctness"]["incorrect"]
    if bad:
        where = "; ".join(f"{b['impl']} at N = {b['seq_len']}, width {b['width']} ({_slice(b)}, max rel err "
                          f"{_x(b['max_rel_err'])} > tolerance {_x(b['tolerance'])})" for b in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        out.append(f"- {len(bad)} point{'s' if len(bad) > 1 else ''} failed the correctness check: {where}{more}. "
                   "Incorrect points appear in no timing figure or fit.")
    else:
        out.append("- No point failed the correctness check.")
    for t in s["targets"]:
        if not t["holds"]:
            out.append(f"- **Target not met:** {t['impl']} time grows as {_ci(t)} at width {t['width']} over "
                       f"N = {t['n_min']}–{t['n_max']} ({_slice(t)}, {_shape(t)}), outside the expected "
                       f"{t['target']}. Likely reason: {t['reason']}.")
    if s["targets"] and all(t["holds"] for t in s["targets"]):
        out.append(f"- All {len(s['targets'])} expected time exponents hold ({_expected(s['targets'])}).")
    targets = {_identity(t): t for t in s["targets"]}
    out += ["", "### Scaling in N", ""]
    out += ["Time per call:", ""]
    out += _grouped(s["time_fits"], lambda f: _fit_sentence(f, "time", targets.get(_identity(f))))
    out += ["", "Peak memory:", ""]
    out += _grouped(s["memory_fits"], lambda f: _fit_sentence(f, "peak memory"))
    out += ["", "### Crossovers and memory limits", ""]
    out += _grouped(s["crossovers"], _crossing_sentence)
    out += _grouped([o for o in s["oom"] if o["first_oom_n"] is not None], _oom_sentence)
    never = sorted({o["impl"] for o in s["oom"]} - {o["impl"] for o in s["oom"] if o["first_oom_n"] is not None})
    if never:
        out.append(f"- No out-of-memory failure for {', '.join(never)} up to the largest N measured.")
    out += ["", "### Work, bandwidth, backward pass and columns", ""]
    out += _flop_sentences(s["flop_counters"])
    out += [bandwidth_sentence(t) for t in s["throughput"] if t["best_bytes_per_s"] is not None]
    for r in s["fwd_bwd"]:
        out.append(f"- {r['impl']} fwd_bwd takes {r['median']:.2f}x the fwd time ({r['device']} {r['dtype']} "
                   f"{r['scope']}; median of {r['n']} shapes, range {r['min']:.2f}–{r['max']:.2f}){_past_llc(r)}.")
    for c in s["columns"]:
        steps = f" ({c['steps_ratio']:.3g}x as many aggregation steps)" if c["steps_ratio"] else ""
        out.append(f"- {c['impl']} time grows {c['time_ratio']:.3g}x from C = {c['c_min']} to C = {c['c_max']}"
                   f"{steps} at B = {c['batch']}, N = {c['seq_len']}, width {c['width']} ({_slice(c)}).")
    budget = s["token_budget"]
    for series in budget["series"] if budget else []:
        pts = series["points"]
        out.append(f"- At B x N = {budget['tokens']:,} (layer, {series['device']} {series['dtype']} "
                   f"{series['mode']}, width {series['width']}), {series['impl']} takes {si(pts[0][2], 's')} "
                   f"at N = {pts[0][0]} and {si(pts[-1][2], 's')} at N = {pts[-1][0]}.")
    return out + largest_sizes(s) + [""]


def _expected(targets: list[dict]) -> str:
    """e.g. 'a and b 0.8–1.2; c >= 1.7': which implementations were held to which exponent."""
    by_target: dict[str, list[str]] = {}
    for t in targets:
        names = by_target.setdefault(t["target"], [])
        if t["impl"] not in names:
            names.append(t["impl"])
    return "; ".join(f"{_and(names)} {target.replace('-', '–')}" for target, names in by_target.items())


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _crossing_sentence(c: dict) -> str:
    head = f"{c['impl']} vs {c['baseline']} at width {c['width']}:"
    if c["outcome"] == "crossed":
        return (f"{head} faster from N ≈ {c['crossover_n']:.0f} on (slower at N = {c['slower_at_n']}, faster "
                f"from N = {c['faster_from_n']}).")
    return f"{head} no crossover; {c['reason']}."


def _oom_sentence(o: dict) -> str:
    last = f"largest N that ran: {o['largest_ok_n']} ({si(o['largest_ok_peak_bytes'], 'B')} peak)" \
        if o["largest_ok_n"] is not None else "no smaller N ran"
    return f"{o['impl']} ran out of memory at N = {o['first_oom_n']} at width {o['width']}; {last}."


def bandwidth_sentence(t: dict) -> str:
    """One implementation's best bytes_min / time against the copy bandwidth. Above the copy bandwidth means a
    cache-resident working set only where the inputs fit the last-level cache; past it, the copy reading was low
    (it varies within a run on shared machines)."""
    frac = f" = {t['fraction_of_copy'] * 100:.0f}% of the copy bandwidth {si(t['copy_bytes_per_s'], 'B/s')}" \
        if t["fraction_of_copy"] is not None else ""
    at = t["best_bw_at"]
    if (t["fraction_of_copy"] or 0) > 1:
        frac += (", above that copy reading with inputs larger than the last-level cache, so the copy reading, not a "
                 "cache, is what to doubt" if at.get("past_llc") else
                 ", above the copy bandwidth, so that working set likely stayed in cache")
    return (f"- {t['impl']} ({_slice(t)}) reaches at most {si(t['best_bytes_per_s'], 'B/s')}{frac} "
            f"(at N = {at['seq_len']}, width {at['width']}); best {si(t['best_flops_per_s'], 'FLOP/s')}.")


def _past_llc(r: dict) -> str:
    """Where the inputs exceed the last-level cache, the ratio alone, and each shape's."""
    shapes = r.get("shapes") or []
    each = ", ".join(f"N = {x['seq_len']} width {x['width']}{' (past LLC)' if x['past_llc'] else ''}: "
                     f"{x['ratio']:.2f}x" for x in shapes)
    beyond = r.get("past_llc")
    if not beyond:
        return f"; {each}; no shape's inputs exceed the LLC" if shapes else ""
    return f"; {each}; past the LLC: {beyond['median']:.2f}x (median of {beyond['n']})"


def _flop_sentences(rows: list[dict]) -> list[str]:
    out = []
    for f in rows:
        fv, fc = f["fvcore_ratio"], f["counter_ratio"]
        off = [r for r in (fv, fc) if r["median"] is not None and abs(r["median"] - 1) > 0.01]
        if off:
            out.append(f"- FLOP counters for {f['impl']} ({f['device']} {f['mode']} {f['scope']}): 2 x fvcore / "
                       f"analytic = {_x(fv['median'])}, FlopCounterMode / analytic = {_x(fc['median'])} (medians); "
                       f"fvcore skips: {', '.join(f['fvcore_skipped']) or 'nothing'}; FlopCounterMode misses: "
                       f"{', '.join(f['counter_missing']) or 'nothing'}.")
    if rows and not out:
        out.append("- fvcore (x2) and FlopCounterMode agree with the analytic FLOP count within 1% (medians).")
    return out


def figures(entries: list[dict], baselines: list[str]) -> list[str]:
    """One section per figure spec, in spec order; a spec drawn under a data-given name finds its figures too."""
    out = ["## Figures", ""]
    words = {"baseline": baselines[0] if baselines else "baseline"}
    for spec in SPECS:
        mine = [e for e in entries if spec.owns(e["kind"])]
        if spec.optional and not mine:
            continue
        out += [f"### {spec.title.format(**words)}", "", spec.text.format(**words), ""]
        for e in mine:
            alt = (e["title"] or "").replace("\n", "; ")  # a line break would end the image syntax
            out += [f"_Skipped: {e['skipped']}._" if e["file"] is None else f"![{alt}]({e['file']})", ""]
    return out


def _key_cols(row: dict) -> dict:
    return {"slice": _slice(row), "impl": row["impl"], "B": row.get("batch", "-"), "D": row.get("width", "-"),
            "H": row.get("heads", "-"), "C": row.get("columns") or "-", "masked": "yes" if row.get("masked") else "no"}


def _fit_rows(fits: list[dict]) -> list[dict]:
    return [{**_key_cols(f), "N range": f"{f['n_min']}-{f['n_max']}", "range": f.get("fit_range", "-"),
             "inputs / LLC at N max": f"{f['inputs_max_bytes'] / f['llc_bytes']:.3g}"
             if f.get("llc_bytes") and f.get("inputs_max_bytes") else "-", "points": f["n_points"],
             "exponent": f"{f['slope']:.3f}", "95% CI": "-" if f["ci_low"] is None else
             f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}]", "r²": "-" if f["r2"] is None else f"{f['r2']:.4f}"}
            for f in fits]


def tables(s: dict) -> list[str]:
    out = ["## Tables", "", f"Scaling fits: {s['fit_rule']}.", ""]
    out += ["### Time exponent in N", "", _table(_fit_rows(s["time_fits"])), ""]
    out += ["### Peak-memory exponent in N", "", _table(_fit_rows(s["memory_fits"])), ""]
    out += ["### t = a + b·N + c·N²", "", f"{s['poly_rule']}.", "", _table([
        {**_key_cols(r), "N range": f"{r['n_min']}-{r['n_max']}", "range": r["fit_range"],
         "b (s/token)": _with_ci(r["b"], r["b_ci"]), "c (s/token²)": _with_ci(r["c"], r["c_ci"]),
         "c·N²/t at N max": _x(r["quadratic_share_at_n_max"]), "max rel residual": _x(r["max_rel_residual"])}
        for r in s.get("poly_fits", [])]), ""]
    out += ["### Speedup over softmax baselines at fixed N", "", _table([
        {**_key_cols(r), "baseline": r["baseline"], f"at N = {r['speedup_at_n']}": _x(r["speedup"]),
         "largest N both ran": r["largest_n"], "at the largest N": _x(r["speedup_at_largest_n"])}
        for r in s.get("speedups", [])]), ""]
    out += ["### Share of the roofs at B·N·D >= 2^25", "", _table([
        {"slice": _slice(r), "impl": r["impl"], "N": ", ".join(map(str, r["n_values"])),
         "bytes_min / time / copy (median, min-max)":
         f"{r['share_median']:.3f} ({r['share_min']:.3f}-{r['share_max']:.3f})",
         **({"/ same-time copy (median)": _x(r.get("share_now_median"))} if any(
             x.get("share_now_median") is not None for x in s.get("streaming", [])) else {}),
         "copy bandwidth": si(r["copy_bytes_per_s"], "B/s"), "GEMM roof": si(r["gemm_flops_per_s"], "FLOP/s"),
         "best FLOP/s / GEMM": _x(r["flops_share_of_gemm"])} for r in s.get("streaming", [])]), ""]
    out += ["### Expected exponents", "", _table([
        {**_key_cols(t), "N range": f"{t['n_min']}-{t['n_max']}", "exponent": f"{t['slope']:.3f}",
         "target": t["target"], "holds": "yes" if t["holds"] else "**no**"} for t in s["targets"]]), ""]
    out += ["### Crossover N against softmax baselines", "", _table([
        {**_key_cols(c), "baseline": c["baseline"], "crossover N": "-" if c["crossover_n"] is None else
         f"{c['crossover_n']:.0f}", "outcome": c["outcome"], "matched N": c["n_matched"]}
        for c in s["crossovers"]]), ""]
    out += ["### Largest N before out-of-memory", "", _table([
        {**_key_cols(o), "largest N that ran": o["largest_ok_n"] or "-", "first OOM N": o["first_oom_n"] or "none",
         "peak at largest N": si(o["largest_ok_peak_bytes"], "B")} for o in s["oom"]]), ""]
    out += ["### FLOP counters against the analytic count (ratios)", "", _table([
        {"device": f["device"], "impl": f["impl"], "mode": f["mode"], "scope": f["scope"],
         "2 x fvcore / analytic": _range(f["fvcore_ratio"]), "FlopCounterMode / analytic": _range(f["counter_ratio"]),
         "fvcore skips": ", ".join(f["fvcore_skipped"]) or "-",
         "FlopCounterMode misses": ", ".join(f["counter_missing"]) or "-"} for f in s["flop_counters"]]), ""]
    out += ["### Correctness", "", _table([
        {"impl": c["impl"], "points": c["points"], "statuses": ", ".join(f"{k} {v}" for k, v in c["statuses"].items()),
         "max abs err": _x(c["max_abs_err"]), "max rel err": _x(c["max_rel_err"]),
         "tolerance (rel)": _x(c["tolerance_max"])} for c in s["correctness"]["per_impl"]]), ""]
    if s["correctness"]["incorrect"]:
        out += ["Incorrect points (never timed, plotted or fitted):", "", _table([
            {**_key_cols(b), "N": b["seq_len"], "max rel err": _x(b["max_rel_err"]), "tolerance": _x(b["tolerance"]),
             "point_id": b["point_id"]} for b in s["correctness"]["incorrect"]]), ""]
    out += ["### Achieved bandwidth and FLOP/s", "", _table([
        {"slice": _slice(t), "impl": t["impl"], "best bytes_min / time": si(t["best_bytes_per_s"], "B/s"),
         "copy bandwidth": si(t["copy_bytes_per_s"], "B/s"),
         "fraction": "-" if t["fraction_of_copy"] is None else f"{t['fraction_of_copy']:.3f}",
         "best FLOP/s": si(t["best_flops_per_s"], "FLOP/s")} for t in s["throughput"]]), ""]
    out += ["### fwd_bwd / fwd time", "", _table([
        {"device": r["device"], "dtype": r["dtype"], "scope": r["scope"], "impl": r["impl"], "shapes": r["n"],
         "median": f"{r['median']:.3f}", "min-max": f"{r['min']:.3f}-{r['max']:.3f}"} for r in s["fwd_bwd"]]), ""]
    out += ["### Column count C", "", _table([
        {"slice": _slice(c), "impl": c["impl"], "B": c["batch"], "N": c["seq_len"], "D": c["width"],
         "time by C": ", ".join(f"C={k}: {si(v, 's')}" for k, v in c["times"]), "t(Cmax)/t(Cmin)":
         f"{c['time_ratio']:.3g}"} for c in s["columns"]]), ""]
    budget = s["token_budget"]
    if budget:
        out += [f"### Time per layer at B x N = {budget['tokens']:,}", "", _table([
            {"impl": b["impl"], "slice": f"{b['device']} {b['dtype']} {b['mode']}", "D": b["width"], "N": n, "B": bb,
             "time": si(t, "s")} for b in budget["series"] for n, bb, t in b["points"]]), ""]
    for q in s.get("quantities", []):  # only what some meter measured: no empty section
        out += [f"### {q['label']} ({q['field']}) by N", "", _table([
            {**_key_cols(r), "N": r["seq_len"], q["label"]: si(r["per_call"], q["unit"]),
             **({"per token": si(r["per_token"], q["unit"])} if q["per_token"] else {})} for r in q["rows"]]), ""]
    return out


def _with_ci(value, ci) -> str:
    return _x(value) if ci is None else f"{_x(value)} [{_x(ci[0])}, {_x(ci[1])}]"


def _range(r: dict) -> str:
    if r["median"] is None:
        return "-"
    return f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f}, {r['n']} points)"


def _noise_lines(n: dict) -> list[str]:
    lines = []
    for d in n.get("devices", []):
        if not d["above_floor"]:
            continue
        line = (f"{d['device']}: {d['within_target']} of {d['above_floor']} points above "
                f"{n['floor_s'] * 1e3:g} ms are within the {n['target'] * 100:g}% p20-p80 target "
                f"(median {d['median_spread_above_floor'] * 100:.1f}%).")
        if d["remeasured"]:
            line += (f" {d['remeasured']} points had a noisy sampling window and were measured again (up to "
                     f"{d['max_windows']} windows; the tightest window is kept and every sample stays in the "
                     "record); "
                     f"the kept median is {d['kept_vs_pooled']:.3f}x the median of all their samples (lowest "
                     f"{d['kept_vs_pooled_min']:.3f}x, {d['kept_vs_pooled_min_point']}), which is how much choosing "
                     "a quiet window moved them.")
        if d.get("revisited"):
            were = "was" if d["revisited"] == 1 else "were"
            line += (f" {d['revisited']} of them {were} still noisy after their windows and {were} measured again "
                     "at the end of the sweep, minutes later; the tightest measurement is kept.")
        if d.get("pressure_measured"):
            limit = f"{n['contention_limit'] * 100:g}%"
            if d["contended"]:
                named = "; ".join(f"{label} ({value * 100:.0f}%)" for label, value in d["contended"])
                line += (f" Other tasks waited for a CPU during more than {limit} of the timing of: {named}; "
                         "such load slows every sample alike, so these times may be inflated beyond their spread.")
            else:
                line += f" No point was timed while other tasks waited for a CPU more than {limit} of the time (PSI)."
        if d.get("outside_target"):
            named = "; ".join(f"{label} ({value * 100:.1f}%)" for label, value in d["outside_target"])
            line += f" Outside the target, so read with that noise: {named}."
        lines.append(line)
    return lines


def caveats(s: dict, runs: list[dict]) -> list[str]:
    threads = sorted({str(r["env"].get("threads")) for r in runs if r["env"].get("threads") is not None})
    n = s["noise"]
    spread = (f"the p20-p80 spread is {n['median_spread'] * 100:.1f}% of the median for the typical point "
              f"(largest {n['max_spread'] * 100:.1f}%)") if n["median_spread"] is not None else "no spread recorded"
    return ["## Conventions and caveats", "",
            "- Units: times are seconds per call (median of the samples; bands p20-p80), memory and traffic bytes, "
            "bandwidth bytes/s, work FLOP and FLOP/s; N is tokens per sequence, D the width, H the heads, C the "
            "column count, B the batch.",
            f"- Noise: {spread}. Differences smaller than that spread are not evidence.",
            *[f"  - {line}" for line in _noise_lines(n)],
            *_slump_lines(s.get("bandwidth_slumps")),
            f"- Threads: {', '.join(threads) or 'not recorded'} (CPU timings depend on the thread count and on "
            "other load on the machine).",
            "- FLOP convention: the analytic count is 2 per multiply-add. fvcore counts 1 per multiply-add, so the "
            "report compares 2 x fvcore with it; FlopCounterMode counts 2 per multiply-add. Ops a counter skips "
            "or misses are listed in the tables.",
            "- peak memory is what the call needed beyond its inputs; bytes_min is the minimal traffic (every "
            "input read once, every output written once), so bytes_min / time is a lower bound on the bandwidth "
            "achieved. The copy bandwidth is `dst.copy_(src)` of float32 tensors far past the caches, read + write "
            "bytes counted, measured in the same run; the GEMM roof is a square `torch.mm` in float32, and on a "
            "GPU also in each bf16/fp16 dtype the run used: a point is set against the GEMM of its own dtype "
            "(none where that was not measured).",
            f"- Scaling fits: {s['fit_rule']}. A fit over a short or small-N range can miss the asymptotic exponent; "
            "the report states such misses instead of changing the range.",
            "- Only status = ok points are timed, plotted or fitted; incorrect points are reported above and "
            "excluded everywhere else.",
            *_contended_lines(s), *_unreadable_lines(s), ""]


def _contended_lines(s: dict) -> list[str]:
    count = s["statuses"].get("contended", 0)
    if s.get("contended_included"):
        return [f"- **Contended points included on request:** {count} points timed while another task held "
                "their CPU beyond the limit are treated as ok here; their times may be inflated."]
    if not count:
        return []
    return [f"- {count} point{'s were' if count > 1 else ' was'} timed while another task held the timed CPU beyond "
            "the limit, twice (status contended): kept in the results, left out of every fit, figure and "
            "crossover (`fastformer-bench report --include-contended` shows them)."]


def _unreadable_lines(s: dict) -> list[str]:
    lines = s.get("unreadable") or []
    if not lines:
        return []
    return [f"- **{len(lines)} line{'s' if len(lines) > 1 else ''} of the results could not be read and "
            f"{'are' if len(lines) > 1 else 'is'} left out of everything above:**",
            *[f"  - {line}" for line in lines]]


def render(summary: dict, runs: list[dict]) -> str:
    """The whole REPORT.md text."""
    labels = ", ".join(r["label"] for r in runs)
    lines = ["# fastformer-bench report", "", f"Results: {labels}. Regenerate with `fastformer-bench report`; "
             "do not edit by hand.", ""]
    lines += environment(runs) + conclusions(summary) + figures(summary["figures"], summary["baselines"])
    lines += tables(summary)
    lines += caveats(summary, runs)
    return "\n".join(lines).rstrip("\n") + "\n"
