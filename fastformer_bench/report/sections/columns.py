"""The column count C: how each implementation's time grows from the fewest to the most columns."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, si, times
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"columns": analysis.column_effect(frame)}


def conclusions(s: dict) -> list[str]:
    out = []
    for c in s["columns"]:
        steps = f" ({times(c['steps_ratio'])} as many aggregation steps)" if c["steps_ratio"] else ""
        out.append(f"- {c['impl']} time grows {times(c['time_ratio'])} from C = {c['c_min']} to C = {c['c_max']}"
                   f"{steps} at B = {c['batch']}, N = {count(c['seq_len'])}, width {c['width']} ({slice_of(c)}).")
    return out


def tables(s: dict) -> list[str]:
    return titled("Column count C", [
        {"slice": slice_of(c), "impl": c["impl"], "B": c["batch"], "N": count(c["seq_len"]),
         "D": c["width"], "time by C": ", ".join(f"C={k}: {si(v, 's')}" for k, v in c["times"]),
         "t(Cmax)/t(Cmin)": times(c["time_ratio"])}
        for c in s["columns"]])
