"""The column count C: how each implementation's time grows from the fewest to the most columns."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import si
from fastformer_bench.report.output import table
from fastformer_bench.report.sections.rows import slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"columns": analysis.column_effect(frame)}


def conclusions(s: dict) -> list[str]:
    out = []
    for c in s["columns"]:
        steps = f" ({c['steps_ratio']:.3g}x as many aggregation steps)" if c["steps_ratio"] else ""
        out.append(f"- {c['impl']} time grows {c['time_ratio']:.3g}x from C = {c['c_min']} to C = {c['c_max']}"
                   f"{steps} at B = {c['batch']}, N = {c['seq_len']}, width {c['width']} ({slice_of(c)}).")
    return out


def tables(s: dict) -> list[str]:
    return ["### Column count C", "", table([
        {"slice": slice_of(c), "impl": c["impl"], "B": c["batch"], "N": c["seq_len"], "D": c["width"],
         "time by C": ", ".join(f"C={k}: {si(v, 's')}" for k, v in c["times"]), "t(Cmax)/t(Cmin)":
         f"{c['time_ratio']:.3g}"} for c in s["columns"]]), ""]
