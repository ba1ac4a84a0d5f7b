"""Memory limits: the largest N each implementation ran before it ran out of memory."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, si
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import grouped, key_columns


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"oom": analysis.oom_limits(frame)}


def _sentence(o: dict) -> str:
    last = f"largest N that ran: {count(o['largest_ok_n'])} ({si(o['largest_ok_peak_bytes'], 'B')} peak)" \
        if o["largest_ok_n"] is not None else "no smaller N ran"
    return f"{o['impl']} ran out of memory at N = {count(o['first_oom_n'])} at width {o['width']}; {last}."


def conclusions(s: dict) -> list[str]:
    out = grouped([o for o in s["oom"] if o["first_oom_n"] is not None], _sentence)
    never = sorted({o["impl"] for o in s["oom"]} - {o["impl"] for o in s["oom"] if o["first_oom_n"] is not None})
    if never:
        out.append(f"- No out-of-memory failure for {', '.join(never)} up to the largest N measured.")
    return out


def tables(s: dict) -> list[str]:
    return titled("Largest N before out-of-memory", [
        {**key_columns(o), "largest N that ran": count(o["largest_ok_n"]),
         "first OOM N": count(o["first_oom_n"]) if o["first_oom_n"] else "none",
         "peak at largest N": si(o["largest_ok_peak_bytes"], "B")} for o in s["oom"]])
