"""The backward pass: fwd_bwd time over fwd time per implementation, and where the inputs exceed the cache."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count
from fastformer_bench.report.output import titled


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"fwd_bwd": analysis.fwd_bwd(frame)}


def _past_llc(r: dict) -> str:
    """Where the inputs exceed the last-level cache, the ratio alone, and each shape's."""
    shapes = r.get("shapes") or []
    each = ", ".join(f"N = {count(x['seq_len'])} width {x['width']}{' (past LLC)' if x['past_llc'] else ''}: "
                     f"{x['ratio']:.2f}×" for x in shapes)
    beyond = r.get("past_llc")
    if not beyond:
        return f"; {each}; no shape's inputs exceed the LLC" if shapes else ""
    return f"; {each}; past the LLC: {beyond['median']:.2f}× (median of {beyond['n']})"


def conclusions(s: dict) -> list[str]:
    return [f"- {r['impl']} fwd_bwd takes {r['median']:.2f}× the fwd time ({r['device']} {r['dtype']} "
            f"{r['scope']}; median of {r['n']} shapes, range {r['min']:.2f}–{r['max']:.2f}){_past_llc(r)}."
            for r in s["fwd_bwd"]]


def tables(s: dict) -> list[str]:
    return titled("fwd_bwd / fwd time", [
        {"device": r["device"], "dtype": r["dtype"], "scope": r["scope"], "impl": r["impl"], "shapes": r["n"],
         "median": f"{r['median']:.3f}", "min-max": f"{r['min']:.3f}-{r['max']:.3f}"} for r in s["fwd_bwd"]])
