"""Crossover N: from which N each additive implementation is faster than each softmax baseline."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import grouped, key_columns


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"crossovers": analysis.crossovers(frame, facts)}


def _sentence(c: dict) -> str:
    head = f"{c['impl']} vs {c['baseline']} at width {c['width']}:"
    if c["outcome"] == "crossed":
        return (f"{head} faster from N ≈ {count(c['crossover_n'])} on (slower at N = {count(c['slower_at_n'])}, "
                f"faster from N = {count(c['faster_from_n'])}).")
    return f"{head} no crossover; {c['reason']}."


def conclusions(s: dict) -> list[str]:
    return grouped(s["crossovers"], _sentence)


def tables(s: dict) -> list[str]:
    return titled("Crossover N against softmax baselines", [
        {**key_columns(c), "baseline": c["baseline"], "crossover N": count(c["crossover_n"]),
         "outcome": c["outcome"], "matched N": c["n_matched"]}
        for c in s["crossovers"]])
