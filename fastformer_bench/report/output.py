"""What every report writes the same way: JSON-ready values, markdown tables, and its REPORT.md and summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path


def clean(value):
    """JSON-ready copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: how run.json names the command line's entry point when it ran as ``python -m fastformer_bench``
ENTRY = "fastformer_bench/__main__.py"


def _short_path(text: str) -> str:
    if text.endswith(ENTRY):
        return "fastformer-bench"
    return "…/" + text.rstrip("/").rsplit("/", 1)[-1]


def without_paths(value):
    """A copy with every absolute path of the producing machine cut to its last part ('…/cpu-study'; the entry
    point to 'fastformer-bench'): a report says what ran, not where it ran from."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and len(value) > 1 and not any(c.isspace() for c in value):
        return _short_path(value)
    return value


def table(rows: list[dict]) -> str:
    """A markdown table of ``rows`` (their keys are the columns), or a note that there is nothing to show."""
    import pandas as pd  # here, not above: the report package imports this module and must stay light to import

    if not rows:
        return "_No data._"
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def titled(heading: str, rows: list[dict], *intro: str) -> list[str]:
    """A '### heading' table section (with ``intro`` paragraphs above the table); nothing at all without rows,
    so that no heading stands empty."""
    if not rows:
        return []
    return [f"### {heading}", "", *[line for text in intro if text for line in (text, "")], table(rows), ""]


def write(out_dir: Path, markdown: str, summary: dict) -> None:
    """out_dir/REPORT.md and out_dir/summary.json (sorted keys, so the same summary gives the same bytes)."""
    (out_dir / "REPORT.md").write_text(markdown, encoding="utf-8")
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
    (out_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
