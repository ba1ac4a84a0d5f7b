"""Which probe cells can tell a difference: a cell (the points that differ only in mixer, implementation, columns
and seed) is conclusive when its control learned it at the cell's budget.

Records that carry ``cell_conclusive`` (the runner's verdict: the control at the bar on every seed; softmax for
pairwise tasks, both mixers for global tasks) are taken at their word. Older records (no such field) keep the
report's earlier rule: the cell's softmax accuracy, the mean over seeds, at the bar. An inconclusive cell is said in
words ("softmax reached 62.0 % at best on seed 1 at the 1,200-step cap: the budget, not the mixer") and greyed in
every figure; it never yields a difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from fastformer_bench.report.fmt import count
from fastformer_bench.report.fmt import pct as percentage

#: the control's bar where run.json's settings do not give one (the probe's sanity bar)
BAR = 0.95
#: what makes points one cell, besides mixer, implementation, columns and seed
CELL = ["task", "seq_len", "width", "heads", "layers", "pairs", "vocab", "steps"]
#: how figures draw an inconclusive cell
GREY = "#BBBBBB"
EDGE = "#777777"
HATCH = "//"


def label(bar: float) -> str:
    """The legend entry of an inconclusive cell: 'inconclusive: control below 95 %'."""
    return f"inconclusive: control below {percentage(bar, 0)}"


def legend_entry(bar: float) -> tuple[Patch, str]:
    """A (handle, label) for figures.legend's ``extra``."""
    return Patch(facecolor=GREY, edgecolor=EDGE, hatch=HATCH), label(bar)


def recorded(frame: pd.DataFrame) -> bool:
    """Whether the records carry the runner's verdict per cell."""
    return "cell_conclusive" in frame.columns and bool(frame["cell_conclusive"].notna().any())


def _cap(point: pd.Series, cap: int | None) -> int | None:
    """The most steps the point's cell could be extended to: its grid's own ``max_steps`` where set, else the
    settings'."""
    own = point.get("max_steps")
    return int(own) if own is not None and not pd.isna(own) and own > 0 else cap


def _at(steps: int, cap: int | None) -> str:
    """'at the 1,200-step cap', 'at 600 steps (the 1,000-step cap allows no doubling)', or 'at 600 steps'."""
    if cap and steps >= cap:
        return f"at the {count(steps)}-step cap"
    if cap and 2 * steps > cap:
        return f"at {count(steps)} steps (the {count(cap)}-step cap allows no doubling)"
    return f"at {count(steps)} steps"


def _who(point: pd.Series) -> str:
    return "softmax" if point["mixer"] == "softmax" else f"{point['mixer']} C={int(point['columns'])}"


def note(cell: pd.DataFrame, controls: tuple[str, ...], bar: float, cap: int | None) -> str:
    """'softmax reached 62.0 % at best on seed 1 at the 1,200-step cap: the budget, not the mixer': the control
    point furthest below the bar, at the learning rate validation chose for it (the best it was found to do)."""
    points = cell[cell["mixer"].isin(controls)].sort_values(["seed", "mixer", "columns"])
    below = points[points["accuracy"] < bar]
    if below.empty:  # the runner judged a point this report does not hold (one that failed): its own sentence
        said = next((str(c) for c in cell.get("control", pd.Series(dtype=object)).dropna()), None)
        return said or f"the control missed {percentage(bar, 0)} on a seed: the budget, not the mixer"
    point = below.loc[below["accuracy"].idxmin()]
    return (f"{_who(point)} reached {percentage(float(point['accuracy']), 1)} at best on seed {int(point['seed'])} "
            f"{_at(int(point['steps']), _cap(point, cap))}: the budget, not the mixer")


def mark(frame: pd.DataFrame, bar: float, cap: int | None) -> pd.DataFrame:
    """``frame`` with ``conclusive`` (1.0, 0.0, or NaN where the cell has no control) and
    ``control_note`` (the words of an inconclusive cell, else None) per point (ok points only: a failed point
    is no cell's evidence)."""
    frame = frame.copy()
    frame["conclusive"] = np.nan
    frame["control_note"] = None
    if frame.empty:
        return frame
    verdicts = recorded(frame)
    ok = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    for _, cell in ok.groupby(CELL, dropna=False):
        if verdicts and cell["cell_conclusive"].notna().any():
            passed = bool(cell["cell_conclusive"].dropna().astype(bool).all())
            kind = cell["task_kind"].iloc[0] if "task_kind" in cell else "pairwise"
            controls = ("softmax", "additive") if kind == "global" else ("softmax",)
        else:  # older records: softmax's mean over seeds at the bar
            softmax = cell[cell["mixer"] == "softmax"]
            if softmax.empty:
                continue
            passed = bool(softmax["accuracy"].mean() >= bar)
            controls = ("softmax",)
        frame.loc[cell.index, "conclusive"] = float(passed)
        if not passed:
            frame.loc[cell.index, "control_note"] = note(cell, controls, bar, cap)
    return frame


def lr_text(values) -> str:
    """The chosen learning rates of a group's seeds: '0.003', or '0.001, 0.003' where seeds chose differently."""
    found = sorted({float(v) for v in values if v is not None and not pd.isna(v)})
    return ", ".join(f"{v:g}" for v in found) if found else "-"


def columns(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: conclusive (the lowest of its points: 0.0 if any is inconclusive), control_note, and,
    where the records carry them, the chosen lr(s) and the number of extensions."""
    grouped = frame.groupby(by, dropna=False)
    table = grouped["conclusive"].min().reset_index()
    table["control_note"] = grouped["control_note"].agg(
        lambda s: next((str(v) for v in s if v is not None and not pd.isna(v)), None)).values
    if "lr" in frame.columns and frame["lr"].notna().any():
        table["lr"] = grouped["lr"].agg(lr_text).values
    if "extensions" in frame.columns and frame["extensions"].notna().any():
        table["extensions"] = grouped["extensions"].max().values
    return table


def flag(value) -> bool | None:
    """A table's conclusive value as True, False or None (no control measured)."""
    return None if value is None or pd.isna(value) else bool(value)


def extensions_text(extensions) -> str:
    """'2 extensions', '1 extension', 'no extension'."""
    n = int(extensions)
    return "no extension" if n == 0 else f"{n} extension{'' if n == 1 else 's'}"


def budget(steps, extensions) -> str:
    """'1,200 (2 extensions)', or the steps alone where the records do not say."""
    if extensions is None or pd.isna(extensions):
        return count(steps) if steps is not None else "-"
    return f"{count(steps)} ({extensions_text(extensions)})"
