"""Achieved bandwidth and FLOP/s: each implementation's best bytes_min / time against the copy bandwidth."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, pct, si
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"throughput": analysis.throughput(frame)}


def bandwidth_sentence(t: dict) -> str:
    """One implementation's best bytes_min / time against the copy bandwidth. Above the copy bandwidth means a
    cache-resident working set only where the inputs fit the last-level cache; past it, the copy reading was low
    (it varies within a run on shared machines)."""
    frac = f" = {pct(t['fraction_of_copy'])} of the copy bandwidth {si(t['copy_bytes_per_s'], 'B/s')}" \
        if t["fraction_of_copy"] is not None else ""
    at = t["best_bw_at"]
    if (t["fraction_of_copy"] or 0) > 1:
        frac += (", above that copy reading with inputs larger than the last-level cache, so the copy reading, not a "
                 "cache, is what to doubt" if at.get("past_llc") else
                 ", above the copy bandwidth, so that working set likely stayed in cache")
    return (f"- {t['impl']} ({slice_of(t)}) reaches at most {si(t['best_bytes_per_s'], 'B/s')}{frac} "
            f"(at N = {count(at['seq_len'])}, width {at['width']}); best {si(t['best_flops_per_s'], 'FLOP/s')}.")


def conclusions(s: dict) -> list[str]:
    return [bandwidth_sentence(t) for t in s["throughput"] if t["best_bytes_per_s"] is not None]


def tables(s: dict) -> list[str]:
    return titled("Achieved bandwidth and FLOP/s", [
        {"slice": slice_of(t), "impl": t["impl"], "best bytes_min / time": si(t["best_bytes_per_s"], "B/s"),
         "copy bandwidth": si(t["copy_bytes_per_s"], "B/s"),
         "fraction": "-" if t["fraction_of_copy"] is None else f"{t['fraction_of_copy']:.3f}",
         "best FLOP/s": si(t["best_flops_per_s"], "FLOP/s")} for t in s["throughput"]])
