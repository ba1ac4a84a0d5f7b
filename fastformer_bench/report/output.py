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


def table(rows: list[dict]) -> str:
    """A markdown table of ``rows`` (their keys are the columns), or a note that there is nothing to show."""
    import pandas as pd  # here, not above: the report package imports this module and must stay light to import

    if not rows:
        return "_No data._"
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def write(out_dir: Path, markdown: str, summary: dict) -> None:
    """out_dir/REPORT.md and out_dir/summary.json (sorted keys, so the same summary gives the same bytes)."""
    (out_dir / "REPORT.md").write_text(markdown, encoding="utf-8")
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
    (out_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
