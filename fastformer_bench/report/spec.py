"""The one list of figure kinds: what ``render_all`` draws and the sections REPORT.md shows, in this order.

A spec's ``kind``, ``title``, ``text`` and ``why`` may name ``{baseline}`` (the primary baseline the records
name) and ``{baseline_tag}`` (that name less its family prefix), filled from the data, never spelled here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fastformer_bench.report import analysis, figures, plotting


@dataclass(frozen=True)
class FigureSpec:
    """One figure kind: how it is drawn (also the prefix of its files), and its section in REPORT.md."""

    kind: str
    title: str
    text: str
    #: draw(frame, directory, look, kind) -> entries {"kind", "file", "title"}; none when there is no data
    draw: Callable[[pd.DataFrame, Path, plotting.Look, str], list[dict]]
    #: why the kind may have nothing to draw (said in REPORT.md instead of a figure)
    why: str
    #: nothing to draw: no section and no skipped entry at all (a quantity no record has is not news)
    optional: bool = False

    def owns(self, kind: str) -> bool:
        """Whether a drawn figure of ``kind`` is one of this spec's, whatever the data filled in."""
        pattern = re.sub(r"\\\{\w+\\\}", r"[\\w.]+", re.escape(self.kind))
        return re.fullmatch(pattern, kind) is not None


SPEEDUP = FigureSpec(
    "speedup_vs_{baseline_tag}", "Speedup over {baseline}",
    "t({baseline}) / t(impl) at matching shapes; blue cells: the additive implementation is faster.",
    figures.speedup_heatmap, "no additive point has a matching {baseline} point")
QUANTITIES = FigureSpec(
    "quantity_vs_n", "Measured quantities vs N",
    "Each quantity a meter asked the report to show (ok points only), per call against N and, when it counts "
    "per token, per token (per call / (B x N)) below.", figures.quantity_vs_n, "no ok point has a shown quantity",
    optional=True)
#: the two figures the Decision section leads with (drawn first; not repeated among the findings' figures)
HEADLINES = (
    FigureSpec("decision_time", "Time vs N at each setting", "Every implementation's time per call against N at the "
               "shape each setting of the decision is read at.", figures.decision_time,
               "no additive implementation has a timed point"),
    FigureSpec("decision_speedup", "Speedup over {baseline} and share of the copy roof", "Top: each additive "
               "implementation's speedup over {baseline} against N. Bottom: bytes_min / time as a share of the run's "
               "copy bandwidth against B·N·D.", figures.decision_speedup, "no additive implementation has a timed "
               "point"),
)
SPECS = (
    FigureSpec("time_vs_n", "Time vs N", "Median time per call against N, one panel per width; the band spans the "
               "p20-p80 samples.", figures.time_vs_n, "no ok points with at least two N at a fixed shape"),
    FigureSpec("memory_vs_n", "Peak memory vs N", "Peak memory the call needed beyond its inputs; a dashed line and "
               "X mark the smallest N at which an implementation ran out of memory.", figures.memory_vs_n,
               "no ok points with a peak memory at two or more N"),
    SPEEDUP,
    FigureSpec("columns", "Effect of the column count C", "Time per call against the column count C at fixed "
               "shapes.", figures.column_effect, "no shape was measured at two or more C"),
    FigureSpec("throughput", "Achieved bandwidth and FLOP/s (roofline)", "Left: bytes_min / time against N with "
               "the measured copy bandwidth (dashed). Right: the roofline, analytic FLOP/s against flops / "
               "bytes_min, under the memory roof (copy bandwidth x intensity, dashed) and the compute roof (the "
               "same run's GEMM FLOP/s in the slice's dtype, dotted) at its thread count; every implementation placed "
               "by its points.", figures.throughput, "no ok points with flops and bytes_min"),
    FigureSpec("token_budget", "Time per layer at a fixed token budget (paper Fig. 2)", "Time per layer call with "
               "B x N held fixed: linear attention should stay flat, quadratic attention grow with N.",
               figures.token_budget, "no layer-scope points at a constant B x N with three or more N"),
    FigureSpec("fwd_vs_fwd_bwd", "Forward vs forward+backward", "Top: fwd (solid) and fwd_bwd (dashed) times. "
               "Bottom: their ratio.", figures.fwd_vs_fwd_bwd,
               "no shape was measured in both fwd and fwd_bwd at two or more N"),
    QUANTITIES,
)


def render_all(frame: pd.DataFrame, directory: str | Path, unreadable: int = 0) -> list[dict]:
    """Draw every figure kind into ``directory``; a kind without data becomes a ``skipped`` entry.

    With ``unreadable`` result lines left out, a skipped figure says that they may be the reason.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in sorted(directory.glob("*.png")):  # figures of an earlier report must not linger beside new ones
        stale.unlink()
    look = plotting.Look(analysis.impl_facts(frame))
    words = look.words()
    entries = []
    with plotting.style():
        for spec in HEADLINES + SPECS:
            kind = spec.kind.format(**words)
            drawn = spec.draw(frame, directory, look, kind)
            if not drawn and not spec.optional:
                why = spec.why.format(**words)
                if unreadable:
                    why += (f" among the readable records; {unreadable} line{'s' if unreadable > 1 else ''} of "
                            "the results could not be read (see the caveats) and may hold the missing points")
                drawn = [{"kind": kind, "file": None, "title": None, "skipped": why}]
            entries.extend(drawn)
    return entries
