"""Performance history across commits: filed runs per machine (store.py), the steps and one-commit outliers in each
point's trend (trend.py; the outliers and gaps as listed: findings.py), and ``show``: each machine's trend figure and
HISTORY.md (render.py). Measuring a range of commits is backfill.py, the interactive pages html.py (plotly); both
are imported by the `history` command only.

``show`` is loaded on first use (PEP 562), so filing a run (``history add``) imports no plotting library; its
module is named apart from it so that importing the module never replaces the function here. Nothing here
imports torch: the history reads and writes only JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastformer_bench.history.store import add, check_one_machine, entries, machine_key
from fastformer_bench.history.trend import DEFAULT_MARGIN, Outlier, Step, outliers, series, steps

if TYPE_CHECKING:  # pragma: no cover
    from fastformer_bench.history.render import show

__all__ = ["DEFAULT_MARGIN", "Outlier", "Step", "add", "check_one_machine", "entries", "machine_key", "outliers",
           "series", "show", "steps"]


def __getattr__(name: str):
    if name != "show":
        raise AttributeError(f"module 'fastformer_bench.history' has no attribute {name!r}")
    from fastformer_bench.history.render import show

    globals()["show"] = show
    return show
