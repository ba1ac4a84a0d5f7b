"""The report's figures, drawn with report/plotting.py (seaborn's style on matplotlib's Agg canvas) as PNG.

Every figure kind returns a list of entries ``{"kind", "file", "title"}`` under the kind ``spec.SPECS`` gives
it (also its files' prefix); a kind without data returns none. Only status == "ok" points are drawn (plus the OOM
markers): an incorrect point's time is never plotted. Colours, markers and legend order follow each
implementation's ``display_order`` fact, never its name.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from fastformer_bench.report import analysis, asymptotics, decision, quantities
from fastformer_bench.report.fmt import si, sig
from fastformer_bench.report.plotting import (
    MAX_FACETS,
    N_LABEL,
    TIME_LABEL,
    Look,
    legend,
    line,
    log_y,
    n_axis,
    n_tick,
    new_figure,
    percent,
    save,
    units,
)


def _slice_word(name: str, value) -> str:
    if name in analysis.METHOD:
        return f"{value} {name}"
    if name == "threads":
        return f"{value} thread{'s' if value != 1 else ''}" if value else "threads not recorded"
    return f"{value} scope" if name == "scope" else str(value)


def _slice_text(key: dict) -> str:
    return ", ".join(_slice_word(k, key[k]) for k in analysis.SLICE if k in key and not _untimed(k, key[k]))


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


def _save_slice(fig: Figure, out: Path, kind: str, key: dict, combo: tuple, title: str) -> dict:
    """Saves a figure of one slice and shape as "<kind>-<slice>-<shape>.png"; ``title``'s {} takes their words."""
    text, tag = _combo_text(combo)
    return save(fig, out, f"{kind}-{_slug(key)}-{tag}", title.format(f"{_slice_text(key)}, {text}"), kind)


def _per_slice(data: pd.DataFrame, keys: list[str]):
    for key, g in data.groupby(keys, sort=True):
        yield dict(zip(keys, key)), g


def _slug(key: dict) -> str:
    return "-".join(f"{key[k]}t" if k == "threads" else str(key[k]) for k in analysis.SLICE
                    if k in key and not _untimed(k, key[k]))


def _untimed(name: str, value) -> bool:
    """A method key of a CPU point (or a CUDA one from before the method axes): not part of a name or a caption."""
    return name in analysis.METHOD and value == analysis.UNTIMED


def time_vs_n(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    entries = []
    for key, s in _per_slice(analysis.timed(frame), analysis.SLICE):
        for combo in _combos(s):
            rows = _combo_rows(s, combo)
            facets = list(rows.groupby(["width", "heads"], sort=True))
            fig, axes = new_figure(len(facets))
            for ax, ((width, heads), g) in zip(axes, facets):
                for impl in look.order(g["impl"].unique()):
                    line(ax, g[g["impl"] == impl], "seq_len", "time_median", impl, look, ("time_p20", "time_p80"))
                n_axis(ax, g["seq_len"])
                log_y(ax, g["time_median"])
                ax.set(title=f"width D = {width}, heads H = {heads}", ylabel=TIME_LABEL)
                units(ax.yaxis, "s")
            legend(fig, axes)
            entries.append(_save_slice(fig, out, kind, key, combo, "Time vs N (median, p20-p80 band): {}"))
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
            fig, axes = new_figure(len(facets))
            any_oom = False
            for ax, ((width, heads), g) in zip(axes, facets):
                ok = g[g["status"] == "ok"]
                for impl in look.order(g["impl"].unique()):
                    if (ok["impl"] == impl).any():
                        line(ax, ok[ok["impl"] == impl], "seq_len", "peak_bytes", impl, look)
                    oom = g[(g["impl"] == impl) & (g["status"] == "oom")]["seq_len"]
                    if len(oom):
                        any_oom = True
                        at = int(oom.min())
                        ax.axvline(at, color=look.colour(impl), ls="--", lw=1.2)
                        ax.plot([at], [0.96], transform=blended_transform_factory(ax.transData, ax.transAxes),
                                marker="X", ms=10, color=look.colour(impl), mec="black", clip_on=False)
                n_axis(ax, g["seq_len"])
                log_y(ax, ok["peak_bytes"])
                ax.set(title=f"width D = {width}, heads H = {heads}", ylabel="peak memory beyond inputs")
                units(ax.yaxis, "B")
            extra = [(Line2D([], [], color="black", ls="--", marker="X", mec="black"), "first OOM N")] if any_oom \
                else None
            legend(fig, axes, extra)
            entries.append(_save_slice(fig, out, kind, key, combo, "Peak memory vs N: {}" + (
                "\ndashed line and X: smallest N that ran out of memory" if any_oom else "")))
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
            fig, axes = new_figure(len(impls), ncols=1, size=(0.8 * len(ns) + 2.6, max(2.4, 0.45 * len(widths) + 1.5)))
            # One colour scale for every panel, symmetric in log2 so that "as fast" is always white.
            limit = max(1.0, float(np.abs(np.log2(g["speedup"])).max()))
            for ax, impl in zip(axes, impls):
                grid = g[g["impl"] == impl].pivot_table(index="width", columns="seq_len", values="speedup",
                                                        aggfunc="median").reindex(index=widths[::-1], columns=ns)
                labels = grid.map(lambda v: "" if pd.isna(v) else f"{sig(v, 2)}×")
                with warnings.catch_warnings():  # seaborn's own use of a matplotlib API being deprecated
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    sns.heatmap(np.log2(grid), ax=ax, annot=labels, fmt="", cmap="RdBu", center=0, vmin=-limit,
                                vmax=limit, linewidths=0.5, annot_kws={"fontsize": 8}, cbar=False)
                ax.set(title=f"{impl}: t({name}) / t({impl})", xlabel=N_LABEL, ylabel="width D")
                ax.set_xticklabels([n_tick(int(n)) for n in ns])
                ax.tick_params(axis="y", rotation=0)
                ax.grid(False)
                ax.set_facecolor("#e8e8e8")  # grey cells: not measured (or no matching baseline point)
            bar = fig.colorbar(axes[0].collections[0], ax=axes, label="speedup (> 1×: additive faster)", shrink=0.9)
            step = max(1, math.ceil(limit / 4))
            ticks = list(range(-(math.floor(limit) // step * step), math.floor(limit) + 1, step))
            bar.set_ticks(ticks, labels=[f"{2 ** v:,}×" if v >= 0 else f"1/{2 ** -v:,}×" for v in ticks])
            title = f"Speedup over {name} (> 1×: additive faster)\n{{}}"
            entries.append(_save_slice(fig, out, kind, key, combo, title))
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
        fig, axes = new_figure(len(facets))
        for ax, ((batch, n, width, heads, masked), g) in zip(axes, facets):
            for impl in look.order(g["impl"].unique()):
                line(ax, g[g["impl"] == impl], "columns", "time_median", impl, look, ("time_p20", "time_p80"))
            cs = sorted(g["columns"].unique())
            ax.set_xticks(cs, labels=[str(c) for c in cs])
            log_y(ax, g["time_median"])
            ax.set(title=f"B = {batch}, N = {n}, D = {width}, H = {heads}" + (", masked" if masked else ""),
                   xlabel="column count C (aggregated columns + 1)", ylabel=TIME_LABEL)
            units(ax.yaxis, "s")
        legend(fig, axes)
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
        fig, (left, right) = new_figure(2, size=(5.2, 3.9))
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
        n_axis(left, s["seq_len"])
        left.set_yscale("log")
        left.set(ylabel="achieved bandwidth bytes_min / time", title="bandwidth vs N")
        right.set(xscale="log", yscale="log", xlabel="arithmetic intensity flops / bytes_min (FLOP/byte)",
                  ylabel="achieved FLOP/s (analytic flops / time)",
                  title="roofline: min(copy bw x intensity, GEMM)" if gemm else
                  "roofline (dashed: copy bandwidth x intensity)")
        # up to a little above the highest roof or point: the memory roof's line would stretch the axis decades up
        right.set_ylim(top=max([float(s["rate"].max())] + gemm + [0.0]) * 3)
        units(left.yaxis, "B/s")
        units(right.yaxis, "FLOP/s")
        units(right.xaxis, "")
        legend(fig, [left])
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
        fig, axes = new_figure(len(facets), size=(5.6, 3.8))
        for ax, ((width, heads), g) in zip(axes, facets):
            for impl in look.order(g["impl"].unique()):
                line(ax, g[g["impl"] == impl], "seq_len", "time_median", impl, look, ("time_p20", "time_p80"))
            n_axis(ax, g["seq_len"])
            batches = g.groupby("seq_len")["batch"].first()
            ax.set_xticks(list(batches.index), labels=[f"{n_tick(n)}\nB={b}" for n, b in batches.items()])
            log_y(ax, g["time_median"])
            ax.set(title=f"width D = {width}, heads H = {heads}", ylabel="time per layer call")
            units(ax.yaxis, "s")
        legend(fig, axes)
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
                    line(top, gi, "seq_len", "fwd", impl, look)
                    line(top, gi, "seq_len", "fwd_bwd", impl, look, ls="--")
                    line(bottom, gi.assign(ratio=gi["fwd_bwd"] / gi["fwd"]), "seq_len", "ratio", impl, look)
                log_y(top, pd.concat([g["fwd"], g["fwd_bwd"]]))
                top.set(title=f"width D = {width}, heads H = {heads}", ylabel=TIME_LABEL)
                units(top.yaxis, "s")
                # From zero, so that sample noise is not blown up into a pattern.
                ratios = g["fwd_bwd"] / g["fwd"]
                bottom.set(ylabel="time ratio fwd_bwd / fwd", ylim=(0, float(ratios.max()) * 1.15))
                units(bottom.yaxis, "×")
                n_axis(bottom, g["seq_len"])
            styles = [(Line2D([], [], color="black"), "fwd (solid)"),
                      (Line2D([], [], color="black", ls="--"), "fwd_bwd (dashed)")]
            legend(fig, [grid[1][0]], styles)
            entries.append(_save_slice(fig, out, kind, key, combo, "Forward vs forward+backward: {}"))
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
                            line(ax, g[g["impl"] == impl], "seq_len", y, impl, look)
                        log_y(ax, g[y])
                        n_axis(ax, g["seq_len"])
                        ax.set(ylabel=label, xlabel=N_LABEL if row == len(panels) - 1 else "")
                        units(ax.yaxis, spec["unit"])
                    grid[0][col].set(title=f"width D = {width}, heads H = {heads}")
                legend(fig, list(grid[0]))
                text, tag = _combo_text(combo)
                # a plugin meter names its own field: keep the file name to safe characters
                name = re.sub(r"[^A-Za-z0-9_.]", "_", field)
                entries.append(save(fig, out, f"{name}_vs_n-{_slug(key)}-{tag}",
                                    f"{spec['label']} vs N ({field}, {spec['unit']}): {_slice_text(key)}, {text}",
                                    kind))
    return entries


def _setting_rows(frame: pd.DataFrame, row: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the timed points of a decision row's setting, those at its shape; softmax points match any C)."""
    t = analysis.timed(frame)
    t = t[decision.decided(t)]  # the allocator condition decisions are read in; "warm" named or not
    keys = [k for k in analysis.SLICE if k != "allocator"]
    here = t[(t[keys] == pd.Series({k: row.get(k, analysis.UNTIMED) for k in keys})).all(axis=1)]
    match = [k for k in analysis.SHAPE if k != "columns"]
    same = (here[match] == pd.Series({k: row[k] for k in match})).all(axis=1)
    columns = row["columns"] or 0
    return here, here[same & ((here["family"] != "additive") | (here["columns"] == columns))]


def _panel_title(row: dict) -> str:
    return f"{decision.setting(row)}\n{decision.shape(row)}"


def decision_time(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    """Headline: time per call against N for every implementation, one panel per setting of the decision."""
    rows = decision.decide(frame, look.facts)
    if not rows:
        return []
    fig, axes = new_figure(len(rows), size=(4.6, 3.7))
    for ax, row in zip(axes, rows):
        _, g = _setting_rows(frame, row)
        for impl in look.order(g["impl"].unique()):
            line(ax, g[g["impl"] == impl], "seq_len", "time_median", impl, look, ("time_p20", "time_p80"))
        n_axis(ax, g["seq_len"])
        log_y(ax, g["time_median"])
        ax.set(title=_panel_title(row), ylabel=TIME_LABEL)
        ax.title.set_fontsize("medium")
        units(ax.yaxis, "s")
    legend(fig, axes)
    return [save(fig, out, kind, "Time per call vs N, every implementation (median, p20-p80 band)", kind)]


def decision_speedup(frame: pd.DataFrame, out: Path, look: Look, kind: str) -> list[dict]:
    """Headline: top, each additive implementation's speedup over the primary baseline against N; bottom, its
    bytes_min / time as a share of the run's copy bandwidth against B·N·D (all shapes of the setting)."""
    rows = decision.decide(frame, look.facts)
    if not rows:
        return []
    base = look.primary()
    ships = decision.candidates(look.facts)
    fig = Figure(figsize=(4.6 * len(rows) + 1.8, 7.4), layout="constrained")
    grid = fig.subplots(2, len(rows), squeeze=False)
    for col, row in enumerate(rows):
        top, bottom = grid[0][col], grid[1][col]
        here, g = _setting_rows(frame, row)
        b = g[g["impl"] == base].groupby("seq_len")["time_median"].median() if base else pd.Series(dtype=float)
        drawn = False
        for impl in look.order(set(g["impl"]) & ships):
            per = g[g["impl"] == impl].groupby("seq_len")["time_median"].median()
            ratio = (b / per).dropna()
            if len(ratio):
                drawn = True
                top.plot(ratio.index, ratio.values, color=look.colour(impl), marker=look.marker(impl), label=impl,
                         lw=1.6, ms=5)
        if drawn:
            top.axhline(1.0, color="black", lw=1.0, ls=":")
            top.set_yscale("log")
            n_axis(top, ratio.index.union(b.index))
            units(top.yaxis, "×")
        else:
            top.text(0.5, 0.5, f"no {base or 'softmax baseline'} point\nin this setting", ha="center", va="center",
                     transform=top.transAxes, color="#555555")
            top.set(xticks=[], yticks=[])
        top.set(title=_panel_title(row), ylabel=f"speedup t({base}) / t(impl)" if base else "")
        top.title.set_fontsize("medium")
        roof = here[here["impl"].isin(ships)]
        roof = roof.assign(elements=roof["batch"] * roof["seq_len"] * roof["width"],
                           share=asymptotics.roof_share(roof)).dropna(subset=["share"])
        for impl in look.order(roof["impl"].unique()):
            r = roof[roof["impl"] == impl].groupby("elements")["share"].median()
            bottom.plot(r.index, r.values, color=look.colour(impl), marker=look.marker(impl), label=impl, lw=1.2,
                        ms=5, alpha=0.9)
        if len(roof):
            bottom.axhline(1.0, color="black", lw=1.0, ls="--")
            bottom.axvline(asymptotics.STREAMING_ELEMENTS, color="#777777", lw=1.0, ls=":")
            bottom.set_xscale("log")
            bottom.set_ylim(0, max(1.1, float(roof["share"].max()) * 1.1))
            units(bottom.xaxis, "k")
            percent(bottom.yaxis)
        else:
            bottom.text(0.5, 0.5, "no memory roof in run.json", ha="center", va="center",
                        transform=bottom.transAxes, color="#555555")
            bottom.set(xticks=[], yticks=[])
        bottom.set(xlabel="B·N·D (elements; dotted: 2^25)", ylabel="share of the memory roof")
    legend(fig, list(grid[0]) + list(grid[1]))
    roof_words = ("share of the memory roof (reads over the read roof plus writes over the write roof where run.json "
                  "has them, else bytes_min over the copy; dashed: 100 % of the run's start readings)")
    title = f"Speedup over {base} (top) and {roof_words} (bottom)" if base else roof_words.capitalize()
    return [save(fig, out, kind, title, kind)]
