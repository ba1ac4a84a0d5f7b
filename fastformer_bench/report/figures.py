"""The report's figures: seaborn styling on matplotlib's Agg canvas, written as PNG.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot) inside an rc context, so building a report
changes no global matplotlib state and needs no display. Every figure kind returns a list of entries
``{"kind", "file", "title"}`` under the kind ``spec.SPECS`` gives it (also its files' prefix); a kind without
data returns none. Only status == "ok" points are drawn (plus the OOM markers): an incorrect point's time is
never plotted. Colours, markers and legend order follow each implementation's ``display_order`` fact, never its name.
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from fastformer_bench.report import analysis, quantities
from fastformer_bench.report.fmt import si

#: colour and marker of display_order 0, 1, ...: the same implementation looks the same in every figure
#: (colour-blind-safe order); an implementation beyond these or without an order gets a stable extra one
COLOURS = ["#555555", "#0072B2", "#009E73", "#CC79A7", "#B2182B", "#E69F00"]
MARKERS = ["s", "o", "^", "D", "v", "P"]
_EXTRA_COLOURS = ["#56B4E9", "#8C564B", "#BCBD22", "#17BECF", "#7F3C8D", "#11A579", "#E73F74", "#3969AC"]
_EXTRA_MARKERS = ["<", ">", "h", "*", "p", "X", "d", "8"]
_RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
       "figure.dpi": 100, "savefig.dpi": 100, "font.family": "DejaVu Sans", "svg.hashsalt": "fastformer-bench"}
N_LABEL = "sequence length N (tokens)"
TIME_LABEL = "time per call (s)"
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


def _new(count: int, ncols: int = 3, size: tuple[float, float] = (4.4, 3.4)) -> tuple[Figure, list]:
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


def _tidy_log_ticks(fig: Figure) -> None:
    # Over two decades the decade labels suffice (minor labels would collide); over less, label 1-2-5 steps so
    # that every axis carries at least two numbers.
    for ax in fig.axes:
        for axis, scale, lims in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                  (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            if scale != "log" or min(lims) <= 0 or isinstance(axis.get_minor_locator(), NullLocator):
                continue
            if max(lims) / min(lims) < 100:
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(FuncFormatter(_sci))
            axis.set_minor_formatter(NullFormatter())


def save(fig: Figure, directory: Path, name: str, title: str, kind: str) -> dict:
    """Write ``fig`` to directory/name.png under ``title``; its entry in the summary's figure list."""
    _tidy_log_ticks(fig)
    # Wrapped to the figure's width: a one-panel figure must not crop a long title.
    width = max(40, int(fig.get_figwidth() * 72 / 6.5))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize="large")
    fig.savefig(directory / f"{name}.png", format="png", metadata={"Software": None})
    return {"kind": kind, "file": f"figures/{name}.png", "title": title}


def _legend(fig: Figure, axes: list, extra: list | None = None) -> None:
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


def _n_axis(ax, ns) -> None:
    ns = sorted({int(n) for n in ns})
    if len(ns) > 1 and ns[-1] / ns[0] >= 4:
        ax.set_xscale("log", base=2)
    step = max(1, math.ceil(len(ns) / 7))
    ax.set_xticks(ns[::step], labels=[str(n) for n in ns[::step]])
    ax.minorticks_off()
    ax.set_xlabel(N_LABEL)


def _log_y(ax, values) -> None:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / v.min() >= 10:
        ax.set_yscale("log")


def _line(ax, g: pd.DataFrame, x: str, y: str, impl: str, look: Look, band: tuple[str, str] | None = None,
          **style) -> None:
    cols = [y] + list(band or [])
    per = g.groupby(x)[cols].median().sort_index()
    ax.plot(per.index, per[y], color=look.colour(impl), marker=look.marker(impl), label=impl, lw=1.6, ms=5,
            **style)
    if band is not None and per[list(band)].notna().all().all():
        ax.fill_between(per.index, per[band[0]], per[band[1]], color=look.colour(impl), alpha=0.2, lw=0)


def _slice_word(name: str, value) -> str:
    if name == "threads":
        return f"{value} thread{'s' if value != 1 else ''}" if value else "threads not recorded"
    return f"{value} scope" if name == "scope" else str(value)


def _slice_text(key: dict) -> str:
    return ", ".join(_slice_word(k, key[k]) for k in analysis.SLICE if k in key)


def _combos(data: pd.DataFrame) -> list[tuple]:
    """(batch, columns, masked) shapes with at least two N: the curves a figure can draw."""
    additive = data[data["family"] == "additive"]
    base = additive if len(additive) else data
    return [key for key, g in base.groupby(["batch", "columns", "masked"], sort=True) if g["seq_len"].nunique() >= 2]


def _combo_rows(data: pd.DataFrame, combo: tuple) -> pd.DataFrame:
    batch, columns, masked = combo
    # Softmax attention has no column count, so its points belong to every C of the same batch and mask.
    same_c = (data["family"] != "additive") | (data["columns"] == columns)
    return data[(data["batch"] == batch) & (data["masked"] == masked) & same_c]


def _combo_text(combo: tuple) -> tuple[str, str]:
    batch, columns, masked = combo
    text = f"B = {batch}" + (f", C = {columns}" if columns else "") + (", masked" if masked else "")
    return text, f"b{batch}" + (f"-c{columns}" if columns else "") + ("-masked" if masked else "")


def _per_slice(data: pd.DataFrame, keys: list[str]):
    for key, g in data.groupby(keys, sort=True):
        yield dict(zip(keys, key)), g


def _slug(key: dict) -> str:
    return "-".join(f"{key[k]}t" if k == "threads" else str(key[k]) for k in analysis.SLICE if k in key)


def time_vs_n(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    entries = []
    for key, s in _per_slice(analysis.timed(frame), analysis.SLICE):
        for combo in _combos(s):
            rows = _combo_rows(s, combo)
            facets = list(rows.groupby(["width", "heads"], sort=True))
            fig, axes = _new(len(facets))
            for ax, ((width, heads), g) in zip(axes, facets):
                for impl in look.order(g["impl"].unique()):
                    _line(ax, g[g["impl"] == impl], "seq_len", "time_median", impl, look, ("time_p20", "time_p80"))
                _n_axis(ax, g["seq_len"])
                _log_y(ax, g["time_median"])
                ax.set(title=f"width D = {width}, heads H = {heads}", ylabel=TIME_LABEL)
            _legend(fig, axes)
            text, tag = _combo_text(combo)
            entries.append(save(fig, out, f"{kind}-{_slug(key)}-{tag}",
                                f"Time vs N (median, p20-p80 band): {_slice_text(key)}, {text}", kind))
    return entries


def memory_vs_n(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    entries = []
    data = frame[(frame["status"] == "oom") | ((frame["status"] == "ok") & (frame["peak_bytes"] > 0))]
    for key, s in _per_slice(data, analysis.SLICE):
        if not (s["status"] == "ok").any():
            continue
        for combo in _combos(s):
            rows = _combo_rows(s, combo)
            facets = list(rows.groupby(["width", "heads"], sort=True))
            fig, axes = _new(len(facets))
            any_oom = False
            for ax, ((width, heads), g) in zip(axes, facets):
                ok = g[g["status"] == "ok"]
                for impl in look.order(g["impl"].unique()):
                    if (ok["impl"] == impl).any():
                        _line(ax, ok[ok["impl"] == impl], "seq_len", "peak_bytes", impl, look)
                    oom = g[(g["impl"] == impl) & (g["status"] == "oom")]["seq_len"]
                    if len(oom):
                        any_oom = True
                        at = int(oom.min())
                        ax.axvline(at, color=look.colour(impl), ls="--", lw=1.2)
                        ax.plot([at], [0.96], transform=blended_transform_factory(ax.transData, ax.transAxes),
                                marker="X", ms=10, color=look.colour(impl), mec="black", clip_on=False)
                _n_axis(ax, g["seq_len"])
                _log_y(ax, ok["peak_bytes"])
                ax.set(title=f"width D = {width}, heads H = {heads}", ylabel="peak memory beyond inputs (bytes)")
            extra = [(Line2D([], [], color="black", ls="--", marker="X", mec="black"), "first OOM N")] if any_oom \
                else None
            _legend(fig, axes, extra)
            text, tag = _combo_text(combo)
            entries.append(save(fig, out, f"{kind}-{_slug(key)}-{tag}",
                                f"Peak memory vs N: {_slice_text(key)}, {text}" +
                                ("\ndashed line and X: smallest N that ran out of memory" if any_oom else ""),
                                kind))
    return entries


def speedup_heatmap(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    name = look.primary()
    if name is None:
        return []
    t = analysis.timed(frame)
    base = t[t["impl"] == name].groupby(analysis.MATCH)["time_median"].median().rename("base")
    add = t[t["family"] == "additive"].merge(base.reset_index(), on=analysis.MATCH)
    add = add.assign(speedup=add["base"] / add["time_median"])
    entries = []
    for key, s in _per_slice(add, analysis.SLICE):
        for combo in _combos(s):
            g = _combo_rows(s, combo)
            impls = look.order(g["impl"].unique())
            ns, widths = sorted(g["seq_len"].unique()), sorted(g["width"].unique())
            fig, axes = _new(len(impls), ncols=1, size=(0.8 * len(ns) + 2.6, max(2.4, 0.45 * len(widths) + 1.5)))
            # One colour scale for every panel, symmetric in log2 so that "as fast" is always white.
            limit = max(1.0, float(np.abs(np.log2(g["speedup"])).max()))
            for ax, impl in zip(axes, impls):
                grid = g[g["impl"] == impl].pivot_table(index="width", columns="seq_len", values="speedup",
                                                        aggfunc="median").reindex(index=widths[::-1], columns=ns)
                labels = grid.map(lambda v: "" if pd.isna(v) else f"{v:.2g}x")
                with warnings.catch_warnings():  # seaborn's own use of a matplotlib API being deprecated
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    sns.heatmap(np.log2(grid), ax=ax, annot=labels, fmt="", cmap="RdBu", center=0, vmin=-limit,
                                vmax=limit, linewidths=0.5, annot_kws={"fontsize": 8}, cbar=False)
                ax.set(title=f"{impl}: t({name}) / t({impl})", xlabel=N_LABEL, ylabel="width D")
                ax.tick_params(axis="y", rotation=0)
                ax.grid(False)
                ax.set_facecolor("#e8e8e8")  # grey cells: not measured (or no matching baseline point)
            fig.colorbar(axes[0].collections[0], ax=axes, label="log2 speedup (> 0: faster)",
                         shrink=0.9)
            text, tag = _combo_text(combo)
            entries.append(save(fig, out, f"{kind}-{_slug(key)}-{tag}",
                                f"Speedup over {name} (x; > 1: additive faster)\n{_slice_text(key)}, {text}", kind))
    return entries


def column_effect(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    t = analysis.timed(frame)
    t = t[(t["family"] == "additive") & (t["columns"] > 0)]
    entries = []
    for key, s in _per_slice(t, analysis.SLICE):
        shape_keys = ["batch", "seq_len", "width", "heads", "masked"]
        facets = [(k, g) for k, g in s.groupby(shape_keys, sort=True) if g["columns"].nunique() >= 2][:MAX_FACETS]
        if not facets:
            continue
        fig, axes = _new(len(facets))
        for ax, ((batch, n, width, heads, masked), g) in zip(axes, facets):
            for impl in look.order(g["impl"].unique()):
                _line(ax, g[g["impl"] == impl], "columns", "time_median", impl, look, ("time_p20", "time_p80"))
            cs = sorted(g["columns"].unique())
            ax.set_xticks(cs, labels=[str(c) for c in cs])
            _log_y(ax, g["time_median"])
            ax.set(title=f"B = {batch}, N = {n}, D = {width}, H = {heads}" + (", masked" if masked else ""),
                   xlabel="column count C (aggregated columns + 1)", ylabel=TIME_LABEL)
        _legend(fig, axes)
        entries.append(save(fig, out, f"{kind}-{_slug(key)}", f"Time vs column count C: {_slice_text(key)}",
                            kind))
    return entries


def throughput(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    t = analysis.timed(frame)
    t = t[(t["bytes_min"] > 0) & (t["flops"] > 0)].assign(
        bw=lambda d: d["bytes_min"] / d["time_median"], rate=lambda d: d["flops"] / d["time_median"],
        intensity=lambda d: d["flops"] / d["bytes_min"])
    entries = []
    for key, s in _per_slice(t, analysis.SLICE):
        fig, (left, right) = _new(2, size=(5.2, 3.9))
        for impl in look.order(s["impl"].unique()):
            g = s[s["impl"] == impl]
            style = {"color": look.colour(impl), "marker": look.marker(impl), "s": 28, "alpha": 0.8,
                     "edgecolor": "none"}
            left.scatter(g["seq_len"], g["bw"], label=impl, **style)
            right.scatter(g["intensity"], g["rate"], **style)
        copy, gemm = sorted(s["copy_bw"].dropna().unique()), sorted(s["gemm_flops"].dropna().unique())
        # At least a decade of intensity, so that the bandwidth line's slope reads as a line, not a dash, and the
        # ridge (where the memory roof meets the compute roof) inside the axes.
        ridges = [g / bw for g in gemm for bw in copy]
        xs = np.geomspace(min([s["intensity"].min()] + ridges) / 4, max([s["intensity"].max()] + ridges) * 4, 80)
        right.set_xlim(xs[0], xs[-1])
        for bw in copy:
            left.axhline(bw, color="black", ls="--", lw=1.2, label=f"copy bandwidth {si(bw, 'B/s')}")
            right.plot(xs, bw * xs, color="black", ls="--", lw=1.0)
        for g in gemm:
            right.axhline(g, color="black", ls=":", lw=1.0)
            right.text(xs[0], g * 1.15, f"GEMM {si(g, 'FLOP/s')}", fontsize=7, va="bottom")
            for bw in copy:  # the attainable roof: memory-bound left of the ridge, compute-bound right of it
                right.plot(xs, np.minimum(bw * xs, g), color="black", lw=1.6, alpha=0.6)
        _n_axis(left, s["seq_len"])
        left.set_yscale("log")
        left.set(ylabel="achieved bandwidth bytes_min / time (B/s)", title="bandwidth vs N")
        right.set(xscale="log", yscale="log", xlabel="arithmetic intensity flops / bytes_min (FLOP/byte)",
                  ylabel="achieved FLOP/s (analytic flops / time)",
                  title="roofline: min(copy bw x intensity, GEMM)" if gemm else
                  "roofline (dashed: copy bandwidth x intensity)")
        _legend(fig, [left])
        note = "" if len(copy) else " (no copy bandwidth in run.json)"
        note += "" if len(gemm) or not len(copy) else " (no GEMM roof in this dtype in run.json)"
        entries.append(save(fig, out, f"{kind}-{_slug(key)}",
                            f"Achieved bandwidth and FLOP/s: {_slice_text(key)}{note}", kind))
    return entries


def token_budget(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    data, tokens = analysis.token_budget(frame)
    entries = []
    for key, s in _per_slice(data, [k for k in analysis.SLICE if k != "scope"]):  # all layer scope
        facets = list(s.groupby(["width", "heads"], sort=True))
        fig, axes = _new(len(facets), size=(5.6, 3.8))
        for ax, ((width, heads), g) in zip(axes, facets):
            for impl in look.order(g["impl"].unique()):
                _line(ax, g[g["impl"] == impl], "seq_len", "time_median", impl, look, ("time_p20", "time_p80"))
            _n_axis(ax, g["seq_len"])
            batches = g.groupby("seq_len")["batch"].first()
            ax.set_xticks(list(batches.index), labels=[f"{n}\nB={b}" for n, b in batches.items()])
            _log_y(ax, g["time_median"])
            ax.set(title=f"width D = {width}, heads H = {heads}", ylabel="time per layer call (s)")
        _legend(fig, axes)
        entries.append(save(fig, out, f"{kind}-{_slug(key)}",
                            f"Time per layer at a fixed token budget B x N = {tokens:,}: {_slice_text(key)}, "
                            "layer scope", kind))
    return entries


def fwd_vs_fwd_bwd(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    t = analysis.timed(frame)
    keys = ["impl", "batch", "seq_len", "width", "heads", "columns", "masked"]
    entries = []
    for key, s in _per_slice(t, [k for k in analysis.SLICE if k != "mode"]):  # both modes in one figure
        per = s.groupby(keys + ["mode"])["time_median"].median().unstack("mode")
        if "fwd" not in per or "fwd_bwd" not in per:
            continue
        families = dict(zip(s["impl"], s["family"]))
        both = per.dropna(subset=["fwd", "fwd_bwd"]).reset_index()
        both["family"] = both["impl"].map(families)
        for combo in _combos(both):
            rows = _combo_rows(both, combo)
            facets = list(rows.groupby(["width", "heads"], sort=True))
            fig = Figure(figsize=(4.6 * len(facets) + 1.8, 7.0), layout="constrained")
            grid = fig.subplots(2, len(facets), squeeze=False, sharex="col")
            for col, ((width, heads), g) in enumerate(facets):
                top, bottom = grid[0][col], grid[1][col]
                for impl in look.order(g["impl"].unique()):
                    gi = g[g["impl"] == impl]
                    _line(top, gi, "seq_len", "fwd", impl, look)
                    _line(top, gi, "seq_len", "fwd_bwd", impl, look, ls="--")
                    _line(bottom, gi.assign(ratio=gi["fwd_bwd"] / gi["fwd"]), "seq_len", "ratio", impl, look)
                _log_y(top, pd.concat([g["fwd"], g["fwd_bwd"]]))
                top.set(title=f"width D = {width}, heads H = {heads}", ylabel=TIME_LABEL)
                # From zero, so that sample noise is not blown up into a pattern.
                ratios = g["fwd_bwd"] / g["fwd"]
                bottom.set(ylabel="time ratio fwd_bwd / fwd (x)", ylim=(0, float(ratios.max()) * 1.15))
                _n_axis(bottom, g["seq_len"])
            styles = [(Line2D([], [], color="black"), "fwd (solid)"),
                      (Line2D([], [], color="black", ls="--"), "fwd_bwd (dashed)")]
            _legend(fig, [grid[1][0]], styles)
            text, tag = _combo_text(combo)
            entries.append(save(fig, out, f"{kind}-{_slug(key)}-{tag}",
                                f"Forward vs forward+backward: {_slice_text(key)}, {text}", kind))
    return entries


def quantity_vs_n(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    """Every quantity a meter asked the report to show: per call against N, and per token below when it says."""
    entries = []
    for field, spec in quantities.shown(frame).items():
        data = quantities.points(frame, field)
        data = data.assign(per_token=data["value"] / (data["batch"] * data["seq_len"]))
        panels = [("value", spec["label"])] + ([("per_token", "per token")] if spec["per_token"] else [])
        for key, s in _per_slice(data, analysis.SLICE):
            for combo in _combos(s):
                facets = list(_combo_rows(s, combo).groupby(["width", "heads"], sort=True))
                fig = Figure(figsize=(4.6 * len(facets) + 1.8, 3.5 * len(panels) + 0.7), layout="constrained")
                grid = fig.subplots(len(panels), len(facets), squeeze=False, sharex="col")
                for col, ((width, heads), g) in enumerate(facets):
                    for row, (y, label) in enumerate(panels):
                        ax = grid[row][col]
                        for impl in look.order(g["impl"].unique()):
                            _line(ax, g[g["impl"] == impl], "seq_len", y, impl, look)
                        _log_y(ax, g[y])
                        _n_axis(ax, g["seq_len"])
                        ax.set(ylabel=f"{label} ({spec['unit']})", xlabel=N_LABEL if row == len(panels) - 1 else "")
                    grid[0][col].set(title=f"width D = {width}, heads H = {heads}")
                _legend(fig, list(grid[0]))
                text, tag = _combo_text(combo)
                # a plugin meter names its own field: keep the file name to safe characters
                name = re.sub(r"[^A-Za-z0-9_.]", "_", field)
                entries.append(save(fig, out, f"{name}_vs_n-{_slug(key)}-{tag}",
                                    f"{spec['label']} vs N ({field}, {spec['unit']}): {_slice_text(key)}, {text}",
                                    kind))
    return entries
