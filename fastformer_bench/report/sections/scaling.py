"""Scaling in N: log-log fits of time and peak memory, and each time exponent held to its expected target."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.analysis import MIN_FIT_POINTS, TOP_HALF
from fastformer_bench.report.fmt import n_range
from fastformer_bench.report.output import titled
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
    """The targets really missed (the 95 % interval excludes the target), each with its likely reason, or how
    many hold; the fits that cannot tell are caveats (``caveats``), not misses."""
    targets = s["targets"]
    missed = [t for t in targets if t.get("verdict", "met" if t["holds"] else "missed") == "missed"]
    out = [f"- **Target not met:** {t['impl']} time grows as {_exponent(t)} at width {t['width']} over "
           f"N = {n_range(t['n_min'], t['n_max'])} ({slice_of(t)}, {shape_of(t)}), outside the expected "
           f"{t['target']}. Likely reason: {t['reason']}." for t in missed]
    held = [t for t in targets if t["holds"]]
    if targets and len(held) == len(targets):
        every = {1: "The one", 2: "Both"}.get(len(targets), f"All {len(targets)}")
        out.append(f"- {every} expected time exponent{'s' if len(targets) > 1 else ''} "
                   f"hold{'' if len(targets) > 1 else 's'} ({_expected(targets)}).")
    elif held:
        undecided = len(targets) - len(held) - len(missed)
        out.append(f"- {len(held)} of {len(targets)} expected time exponents hold ({_expected(held)})"
                   + (f"; {undecided} cannot be told from the target (see the caveats)" if undecided else "") + ".")
    return out


def _undecided_why(t: dict) -> str:
    if t.get("fit_range") == TOP_HALF and t.get("llc_bytes"):
        past = "none" if (t.get("inputs_max_bytes") or 0) <= t["llc_bytes"] else "too few"
        return (f"not enough N past the cache to tell ({past} of its {t.get('n_values', 'few')} N had inputs past "
                f"the last-level cache; the largest inputs are {t['inputs_max_bytes'] / t['llc_bytes']:.2g}× the LLC)")
    return f"more N, further out, would tell (it has {t.get('n_values', 'few')} N)"


def caveats(s: dict) -> list[str]:
    """The time fits whose 95 % interval spans their target: neither met nor missed."""
    return [f"- {t['impl']} ({slice_of(t)}, {shape_of(t)}, width {t['width']}): time grows as {_exponent(t)} over "
            f"N = {n_range(t['n_min'], t['n_max'])}; the 95 % interval {_overlap(t)} the expected {t['target']}, so "
            f"these points cannot tell a miss: {_undecided_why(t)}." for t in s["targets"]
            if t.get("verdict") == "undecided"]


def _overlap(t: dict) -> str:
    """'spans' where the interval holds the whole target, else 'reaches'."""
    low, _, high = t["target"].partition("-")
    inside = t["ci_low"] is not None and high and t["ci_low"] <= float(low) and t["ci_high"] >= float(high)
    return "spans" if inside else "reaches"


def _note(target: dict | None) -> str:
    if target is None:
        return ""
    word = {"met": "met", "missed": "**not met**", "undecided": "cannot tell"}[target.get("verdict", "met")]
    return f"; expected {target['target']}: {word}"


def _fit_sentence(row: dict, what: str, target: dict | None = None) -> str:
    return (f"{row['impl']} {what} grows as {_exponent(row)} at width {row['width']} over N = "
            f"{n_range(row['n_min'], row['n_max'])} ({row['n_points']} points{_note(target)}).")


def conclusions(s: dict) -> list[str]:
    """Every fit, time then peak memory; a quantity with no fit says so in one line."""
    targets = {identity(t): t for t in s["targets"]}
    if not s["time_fits"] and not s["memory_fits"]:
        return [f"No implementation was measured at {MIN_FIT_POINTS} or more N at one shape, so no exponent was "
                "fitted."]
    out = []
    for label, fits, what in (("Time per call:", s["time_fits"], "time"),
                              ("Peak memory:", s["memory_fits"], "peak memory")):
        if fits:
            out += ([""] if out else []) + [label, ""]
            out += grouped(fits, lambda f, w=what: _fit_sentence(f, w, targets.get(identity(f)) if w == "time"
                                                                 else None))
    return out


def _fit_rows(fits: list[dict]) -> list[dict]:
    return [{**key_columns(f), "N range": n_range(f["n_min"], f["n_max"]), "range": f.get("fit_range", "-"),
             "inputs / LLC at N max": f"{f['inputs_max_bytes'] / f['llc_bytes']:.3g}"
             if f.get("llc_bytes") and f.get("inputs_max_bytes") else "-", "points": f["n_points"],
             "exponent": f"{f['slope']:.3f}", "95% CI": "-" if f["ci_low"] is None else
             f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}]", "r²": "-" if f["r2"] is None else f"{f['r2']:.4f}"}
            for f in fits]


def tables(s: dict) -> list[str]:
    rule = f"Scaling fits: {s['fit_rule']}."
    return (titled("Time exponent in N", _fit_rows(s["time_fits"]), rule)
            + titled("Peak-memory exponent in N", _fit_rows(s["memory_fits"]), rule if not s["time_fits"] else ""))


def target_table(s: dict) -> list[str]:
    words = {"met": "yes", "missed": "**no**", "undecided": "cannot tell"}
    return titled("Expected exponents", [
        {**key_columns(t), "N range": n_range(t["n_min"], t["n_max"]), "exponent": f"{t['slope']:.3f}",
         "95% CI": "-" if t["ci_low"] is None else f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]",
         "target": t["target"], "holds": words[t.get("verdict", "met" if t["holds"] else "missed")]}
        for t in s["targets"]])
