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
    """A PR comment's worth: the verdict on the first line, the failing points, every point folded away."""
    def line(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    def table(selected: list[Row]) -> str:
        body = [line(COLUMNS), line(["---"] * len(COLUMNS))] + [line(cells(r, instructions)) for r in selected]
        return "\n".join(body)

    failing = [r for r in rows if r.fails]
    verdict, _, rest = summary.partition(": ")
    parts = [f"**{verdict}**: {rest}", "", f"_{title}_", ""]
    if failing:
        parts += [table(failing), ""]
    parts += [f"<details><summary>All {len(rows)} points</summary>", "", table(rows), "", "</details>"]
    return "\n".join(parts) + "\n"


def _escape(text: str, property_value: bool = False) -> str:
    """GitHub workflow-command escaping (a property value also escapes ':' and ',')."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def github_annotations(rows: list[Row], instructions: bool) -> list[str]:
    """One ``::error`` workflow command per failing point (shown on the pull request's checks)."""
    found = []
    for row in (r for r in rows if r.fails):
        what = "instruction count" if instructions else "time"
        detail = f"{row.verdict}: {what} ratio {row.ratio:.3f}" if row.ratio is not None else row.verdict
        message = f"{row.label}: {detail}" + (f" ({row.note})" if row.note else "")
        found.append(f"::error title={_escape('fastformer-bench gate: ' + row.verdict, True)}::{_escape(message)}")
    return found


def write_json(path: str | Path, rows: list[Row], meta: dict) -> None:
    payload = {**meta, "rows": [{**asdict(r), "fails": r.fails} for r in rows]}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
