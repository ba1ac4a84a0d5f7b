"""REPORT.md's analyses, one module each: the analysis it calls (``summarize``: its keys of summary.json), its
sentences among the conclusions, its table, and any caveat it adds. ``report.markdown`` puts them in order.

Shared by them: rows.py (how a row is named in words and table columns). Not analyses: figures.py (a section
per figure spec) and conventions.py (units, conventions and caveats).
"""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.sections import (
    columns,
    correctness,
    crossovers,
    decision,
    flop_counters,
    fwd_bwd,
    launch,
    memory_limits,
    noise,
    points,
    polynomial,
    process,
    quantities,
    scaling,
    speedups,
    streaming,
    throughput,
    token_budget,
)

#: every analysis; each gives summary.json keys of its own
ANALYSES = (points, decision, correctness, scaling, polynomial, speedups, streaming, crossovers, memory_limits,
            flop_counters, throughput, fwd_bwd, columns, token_budget, quantities, noise, launch, process)


def summarize(frame: pd.DataFrame) -> dict:
    """Every analysis, as one JSON-ready dict (the body of summary.json)."""
    facts = analysis.impl_facts(frame)
    return {key: value for section in ANALYSES for key, value in section.summarize(frame, facts).items()}
