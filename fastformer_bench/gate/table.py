"""The gate's table: rich on the terminal, markdown for a CI summary, JSON for scripts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fastformer_bench.gate.compare import Row

COLUMNS = ("point", "baseline", "candidate", "ratio", "95% CI", "q (BH)", "verdict", "note")


def _value(value: float | None, instructions: bool) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if instructions else f"{value * 1e3:.4g} ms"


def cells(row: Row, instructions: bool) -> list[str]:
    ci = f"{row.ci_low:.3f}–{row.ci_high:.3f}" if row.ci_low is not None and row.ci_high is not None else ""
    return [row.label, _value(row.baseline, instructions), _value(row.candidate, instructions),
            f"{row.ratio:.3f}" if row.ratio is not None else "", ci,
            f"{row.q_value:.2g}" if row.q_value is not None else "", row.verdict, row.note]


def print_table(rows: list[Row], title: str, instructions: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("point", "verdict", "note") else "right")
    for row in rows:
        style = "bold red" if row.fails else "green" if row.verdict == "faster" else None
        table.add_row(*cells(row, instructions), style=style)
    Console(width=200).print(table)


def markdown(rows: list[Row], title: str, instructions: bool, summary: str) -> str:
    def line(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    body = [line(COLUMNS), line(["---"] * len(COLUMNS))] + [line(cells(r, instructions)) for r in rows]
    return f"## {title}\n\n{summary}\n\n" + "\n".join(body) + "\n"


def write_json(path: str | Path, rows: list[Row], meta: dict) -> None:
    payload = {**meta, "rows": [{**asdict(r), "fails": r.fails} for r in rows]}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
