"""Correctness: each implementation's largest errors, and the incorrect points by name (never timed or fitted)."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, short
from fastformer_bench.report.output import table, titled
from fastformer_bench.report.sections.rows import key_columns, slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"correctness": analysis.correctness(frame)}


def conclusions(s: dict) -> list[str]:
    bad = s["correctness"]["incorrect"]
    if not bad:
        return ["- No point failed the correctness check."]
    where = "; ".join(f"{b['impl']} at N = {count(b['seq_len'])}, width {b['width']} ({slice_of(b)}, max rel err "
                      f"{short(b['max_rel_err'])} > tolerance {short(b['tolerance'])})" for b in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return [f"- {len(bad)} point{'s' if len(bad) > 1 else ''} failed the correctness check: {where}{more}. "
            "Incorrect points appear in no timing figure or fit."]


def tables(s: dict) -> list[str]:
    out = titled("Correctness", [
        {"impl": c["impl"], "points": c["points"], "statuses": ", ".join(f"{k} {v}" for k, v in c["statuses"].items()),
         "max abs err": short(c["max_abs_err"]), "max rel err": short(c["max_rel_err"]),
         "tolerance (rel)": short(c["tolerance_max"])} for c in s["correctness"]["per_impl"]])
    if s["correctness"]["incorrect"]:
        out += ["Incorrect points (never timed, plotted or fitted):", "", table([
            {**key_columns(b), "N": b["seq_len"], "max rel err": short(b["max_rel_err"]),
             "tolerance": short(b["tolerance"]), "point_id": b["point_id"]} for b in s["correctness"]["incorrect"]]),
            ""]
    return out
