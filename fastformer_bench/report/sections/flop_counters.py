"""FLOP counters (fvcore, FlopCounterMode) against the analytic FLOP count, and the ops each one misses."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import short
from fastformer_bench.report.output import titled


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"flop_counters": analysis.flop_counters(frame)}


def conclusions(s: dict) -> list[str]:
    rows, out = s["flop_counters"], []
    for f in rows:
        fv, fc = f["fvcore_ratio"], f["counter_ratio"]
        off = [r for r in (fv, fc) if r["median"] is not None and abs(r["median"] - 1) > 0.01]
        if off:
            out.append(f"- FLOP counters for {f['impl']} ({f['device']} {f['mode']} {f['scope']}): 2 x fvcore / "
                       f"analytic = {short(fv['median'])}, FlopCounterMode / analytic = {short(fc['median'])} "
                       f"(medians); fvcore skips: {', '.join(f['fvcore_skipped']) or 'nothing'}; FlopCounterMode "
                       f"misses: {', '.join(f['counter_missing']) or 'nothing'}.")
    if rows and not out:
        out.append("- fvcore (x2) and FlopCounterMode agree with the analytic FLOP count within 1% (medians).")
    return out


def _range(r: dict) -> str:
    if r["median"] is None:
        return "-"
    return f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f}, {r['n']} points)"


def tables(s: dict) -> list[str]:
    return titled("FLOP counters against the analytic count (ratios)", [
        {"device": f["device"], "impl": f["impl"], "mode": f["mode"], "scope": f["scope"],
         "2 x fvcore / analytic": _range(f["fvcore_ratio"]), "FlopCounterMode / analytic": _range(f["counter_ratio"]),
         "fvcore skips": ", ".join(f["fvcore_skipped"]) or "-",
         "FlopCounterMode misses": ", ".join(f["counter_missing"]) or "-"} for f in s["flop_counters"]])
