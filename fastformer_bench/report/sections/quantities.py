"""The quantities a meter asked the report to show (energy, ...): one table each by N, and none when no record
has any."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import quantities
from fastformer_bench.report.fmt import si
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import key_columns


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    """summary.json's ``quantities``, or nothing at all when no record has any (so such a summary is unchanged)."""
    found = quantities.table(frame)
    return {"quantities": found} if found else {}


def tables(s: dict) -> list[str]:
    out = []
    for q in s.get("quantities", []):
        out += titled(f"{q['label']} ({q['field']}) by N", [
            {**key_columns(r), "N": r["seq_len"], q["label"]: si(r["per_call"], q["unit"]),
             **({"per token": si(r["per_token"], q["unit"])} if q["per_token"] else {})} for r in q["rows"]])
    return out
