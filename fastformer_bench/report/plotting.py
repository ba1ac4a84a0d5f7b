"""How every figure of the suite is drawn: seaborn's style on matplotlib's Agg canvas, each implementation's
colour and marker, axes in SI units and N ticks, one legend below the panels, and the PNG written without state.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot) inside ``style()``'s rc context, so drawing
changes no global matplotlib state and needs no display. report/figures.py (a report's figures), the probe's and
the history's figures draw with these.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import (
    EngFormatter,
    FixedLocator,
    FuncFormatter,
    LogFormatter,
    NullFormatter,
    PercentFormatter,
)

from fastformer_bench.report import analysis

#: colour and marker of display_order 0, 1, ...: the same implementation looks the same in every figure
#: (colour-blind-safe order); an implementation beyond these or without an order gets a stable extra one
COLOURS = ["#555555", "#0072B2", "#009E73", "#CC79A7", "#B2182B", "#E69F00"]
MARKERS = ["s", "o", "^", "D", "v", "P"]
_EXTRA_COLOURS = ["#56B4E9", "#8C564B", "#BCBD22", "#17BECF", "#7F3C8D", "#11A579", "#E73F74", "#3969AC"]
_EXTRA_MARKERS = ["<", ">", "h", "*", "p", "X", "d", "8"]
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
       "figure.dpi": 100, "savefig.dpi": 100, "font.family": "DejaVu Sans", "svg.hashsalt": "fastformer-bench"}
N_LABEL = "sequence length N (tokens; k = 1024)"
TIME_LABEL = "time per call"
MAX_FACETS = 12


def _stable_index(name: str, size: int) -> int:
    # crc32, not hash(): Python salts str hashes per process, and an unknown impl must keep its colour.
    return zlib.crc32(name.encode()) % size


def colour(impl: str, order: int | None) -> str:
    if order is not None and 0 <= order < len(COLOURS):
        return COLOURS[order]
    return _EXTRA_COLOURS[_stable_index(impl, len(_EXTRA_COLOURS))]


def marker(impl: str, order: int | None) -> str:
    if order is not None and 0 <= order < len(MARKERS):
        return MARKERS[order]
    return _EXTRA_MARKERS[_stable_index(impl, len(_EXTRA_MARKERS))]


@dataclass(frozen=True)
class Look:
    """How each implementation of one report is drawn and in which order, from its records' facts."""

    facts: dict[str, dict]

    def _order(self, impl: str) -> int | None:
        return self.facts.get(impl, {}).get("display_order")

    def colour(self, impl: str) -> str:
        return colour(impl, self._order(impl))

    def marker(self, impl: str) -> str:
        return marker(impl, self._order(impl))

    def order(self, impls) -> list[str]:
        return analysis.impl_order(impls, self.facts)

    def primary(self) -> str | None:
        found = analysis.baselines(self.facts)
        return found[0] if found else None

    def words(self) -> dict[str, str]:
        """What spec templates name: the primary baseline, and its name less its family prefix (file tag)."""
        base = self.primary()
        if base is None:
            return {"baseline": "baseline", "baseline_tag": "baseline"}
        return {"baseline": base, "baseline_tag": base.removeprefix(f"{self.facts[base]['family']}_")}


def style():
    """The rc context every figure is drawn in (no global matplotlib state changes)."""
    return mpl.rc_context(_RC)


def new_figure(count: int, ncols: int = 3, size: tuple[float, float] = (4.4, 3.4)) -> tuple[Figure, list]:
    cols = min(count, ncols)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(size[0] * cols + 1.8, size[1] * rows + 0.7), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _sci(value: float, _pos=None) -> str:
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$" if mantissa != "1" else f"$10^{{{int(exponent)}}}$"


def units(axis: Axis, unit: str) -> None:
    """Label ``axis`` with SI prefixes ('1 ms', '10 µs', '100 MB/s'); unit '×' for factors ('1,000×', '0.5×'),
    '' for plain numbers ('0.1', '1,000'), 'k' for counts with SI prefixes ('100 k', '10 M')."""
    if unit in ("×", ""):
        axis.set_major_formatter(FuncFormatter(lambda value, _pos=None: f"{value:,.6g}{unit}"))
    else:
        axis.set_major_formatter(EngFormatter(unit="" if unit == "k" else unit, sep=" ", usetex=False,
                                              useMathText=False))


def percent(axis: Axis) -> None:
    """Label ``axis``, holding shares (1.0 = all), in percent."""
    axis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def n_tick(n: int) -> str:
    """A sequence length as a tick label: '512', '8k' (8,192), '128k' (131,072): k = 1024, as context lengths go."""
    return str(n) if n < 1024 else f"{n // 1024}k" if n % 1024 == 0 else f"{n:,}"


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis spanning less than two decades: the 1-2-5 steps inside it, or finer steps where fewer
    than two of those fall inside (matplotlib would fall back to linear steps, which crowd at the top)."""
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    for steps in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in decades for m in steps if low <= m * 10.0**e <= high]
        if len(ticks) >= 2:
            return ticks
    return [low, high]


def _tidy_log_ticks(fig: Figure) -> None:
    # Over two decades the decade labels suffice (minor labels would collide); over less, label 1-2-5 steps so
    # that every axis carries at least two numbers.
    for ax in fig.axes:
        for axis, scale, lims in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                  (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            # an axis with ticks of its own (each N measured) keeps them
            if scale != "log" or min(lims) <= 0 or isinstance(axis.get_major_locator(), FixedLocator):
                continue
            if max(lims) / min(lims) < 100:
                axis.set_major_locator(FixedLocator(log_ticks(min(lims), max(lims))))
                if isinstance(axis.get_major_formatter(), LogFormatter):  # the default: no unit was set
                    axis.set_major_formatter(FuncFormatter(_sci))
            axis.set_minor_formatter(NullFormatter())


def save(fig: Figure, directory: Path, name: str, title: str, kind: str) -> dict:
    """Write ``fig`` to directory/name.png under ``title``; its entry in the summary's figure list."""
    _tidy_log_ticks(fig)
    # Wrapped to the figure's width: a one-panel figure must not crop a long title.
    width = max(40, int(fig.get_figwidth() * 72 / 6.5))
    # "B = 8" stays on one line: its spaces are held while wrapping
    lines = (textwrap.fill(line.replace(" = ", "\x01=\x01"), width).replace("\x01", " ") for line in title.split("\n"))
    fig.suptitle("\n".join(lines), fontsize="large")
    fig.savefig(directory / f"{name}.png", format="png", metadata={"Software": None})
    return {"kind": kind, "file": f"figures/{name}.png", "title": title}


def legend(fig: Figure, axes: list, extra: list | None = None) -> None:
    """One legend for the whole figure, below its panels: every label the axes carry, once, then ``extra``."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    handles = list(seen.values()) + [h for h, _ in extra or []]
    labels = list(seen) + [lab for _, lab in extra or []]
    if handles:
        # Below the panels, so a long title never runs into it.
        ncols = min(len(handles), 8 if fig.get_figwidth() > 9 else 4)
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False)


def n_axis(ax, ns) -> None:
    ns = sorted({int(n) for n in ns})
    if len(ns) > 1 and ns[-1] / ns[0] >= 4:
        ax.set_xscale("log", base=2)
    step = max(1, math.ceil(len(ns) / 7))
    ax.set_xticks(ns[::step], labels=[n_tick(n) for n in ns[::step]])
    ax.minorticks_off()
    ax.set_xlabel(N_LABEL)


def log_y(ax, values) -> None:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / v.min() >= 10:
        ax.set_yscale("log")


def line(ax, g: pd.DataFrame, x: str, y: str, impl: str, look: Look, band: tuple[str, str] | None = None,
          **style) -> None:
    cols = [y] + list(band or [])
    per = g.groupby(x)[cols].median().sort_index()
    ax.plot(per.index, per[y], color=look.colour(impl), marker=look.marker(impl), label=impl, lw=1.6, ms=5,
            **style)
    if band is not None and per[list(band)].notna().all().all():
        ax.fill_between(per.index, per[band[0]], per[band[1]], color=look.colour(impl), alpha=0.2, lw=0)
