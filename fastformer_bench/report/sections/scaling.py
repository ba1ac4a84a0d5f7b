"""Scaling in N: log-log fits of time and peak memory, and each time exponent held to its expected target."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.output import table
from fastformer_bench.report.sections.rows import grouped, identity, key_columns, shape_of, slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    time_fits = analysis.scaling_fits(frame, "time")
    return {"fit_rule": analysis.FIT_RULE, "time_fits": time_fits, "targets": analysis.target_checks(time_fits, facts),
            "memory_fits": analysis.scaling_fits(frame, "memory")}


def _exponent(row: dict) -> str:
    if row["ci_low"] is None:
        return f"N^{row['slope']:.2f}"
    return f"N^{row['slope']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _expected(targets: list[dict]) -> str:
    """e.g. 'a and b 0.8–1.2; c >= 1.7': which implementations were held to which exponent."""
    by_target: dict[str, list[str]] = {}
    for t in targets:
        names = by_target.setdefault(t["target"], [])
        if t["impl"] not in names:
            names.append(t["impl"])
    return "; ".join(f"{_and(names)} {target.replace('-', '–')}" for target, names in by_target.items())


def verdicts(s: dict) -> list[str]:
    """The targets missed, each with its likely reason, or that all of them hold."""
    out = [f"- **Target not met:** {t['impl']} time grows as {_exponent(t)} at width {t['width']} over "
           f"N = {t['n_min']}–{t['n_max']} ({slice_of(t)}, {shape_of(t)}), outside the expected "
           f"{t['target']}. Likely reason: {t['reason']}." for t in s["targets"] if not t["holds"]]
    if s["targets"] and all(t["holds"] for t in s["targets"]):
        out.append(f"- All {len(s['targets'])} expected time exponents hold ({_expected(s['targets'])}).")
    return out


def _fit_sentence(row: dict, what: str, target: dict | None = None) -> str:
    note = ""
    if target is not None:
        note = f"; expected {target['target']}: " + ("met" if target["holds"] else "**not met**")
    return (f"{row['impl']} {what} grows as {_exponent(row)} at width {row['width']} over N = {row['n_min']}–"
            f"{row['n_max']} ({row['n_points']} points{note}).")


def conclusions(s: dict) -> list[str]:
    targets = {identity(t): t for t in s["targets"]}
    out = ["Time per call:", ""]
    out += grouped(s["time_fits"], lambda f: _fit_sentence(f, "time", targets.get(identity(f))))
    out += ["", "Peak memory:", ""]
    return out + grouped(s["memory_fits"], lambda f: _fit_sentence(f, "peak memory"))


def _fit_rows(fits: list[dict]) -> list[dict]:
    return [{**key_columns(f), "N range": f"{f['n_min']}-{f['n_max']}", "range": f.get("fit_range", "-"),
             "inputs / LLC at N max": f"{f['inputs_max_bytes'] / f['llc_bytes']:.3g}"
             if f.get("llc_bytes") and f.get("inputs_max_bytes") else "-", "points": f["n_points"],
             "exponent": f"{f['slope']:.3f}", "95% CI": "-" if f["ci_low"] is None else
             f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}]", "r²": "-" if f["r2"] is None else f"{f['r2']:.4f}"}
            for f in fits]


def tables(s: dict) -> list[str]:
    return [f"Scaling fits: {s['fit_rule']}.", "",
            "### Time exponent in N", "", table(_fit_rows(s["time_fits"])), "",
            "### Peak-memory exponent in N", "", table(_fit_rows(s["memory_fits"])), ""]


def target_table(s: dict) -> list[str]:
    return ["### Expected exponents", "", table([
        {**key_columns(t), "N range": f"{t['n_min']}-{t['n_max']}", "exponent": f"{t['slope']:.3f}",
         "target": t["target"], "holds": "yes" if t["holds"] else "**no**"} for t in s["targets"]]), ""]
