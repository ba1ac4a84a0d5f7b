"""Time per layer at a fixed token budget B x N (paper Fig. 2): flat for linear attention, growing for quadratic."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, si
from fastformer_bench.report.output import titled


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"token_budget": analysis.budget_summary(frame)}


def conclusions(s: dict) -> list[str]:
    budget, out = s["token_budget"], []
    for series in budget["series"] if budget else []:
        pts = series["points"]
        out.append(f"- At B x N = {budget['tokens']:,} (layer, {series['device']} {series['dtype']} "
                   f"{series['mode']}, width {series['width']}), {series['impl']} takes {si(pts[0][2], 's')} "
                   f"at N = {count(pts[0][0])} and {si(pts[-1][2], 's')} at N = {count(pts[-1][0])}.")
    return out


def tables(s: dict) -> list[str]:
    budget = s["token_budget"]
    if not budget:
        return []
    return titled(f"Time per layer at B x N = {budget['tokens']:,}", [
        {"impl": b["impl"], "slice": f"{b['device']} {b['dtype']} {b['mode']}", "D": b["width"], "N": n, "B": bb,
         "time": si(t, "s")} for b in budget["series"] for n, bb, t in b["points"]])
