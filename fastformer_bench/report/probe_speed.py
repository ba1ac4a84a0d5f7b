"""Capability beside speed: each mixer's probe accuracy joined with its time per token from a speed study.

Per task, the conclusive comparison (probe_decision.passed: its control learned the cell) at the largest N (among
those, the largest gap, as the decision rule picks); a task with none: the comparison where softmax came closest,
joined greyed and stating no difference. Its accuracy per mixer sits beside the forward time per token
(time_median / (batch · N)) of the speed records at the same width, or the nearest width measured (said so), and at
the same N or the nearest N measured at that width (said so). Additive: the probe's own implementation (its
records' ``impl``) and every other linear-time additive implementation measured; softmax: the probe's softmax
implementation. Speed records: mode fwd, the attention core where measured (else the layer), batch 1, the fewest
threads, the probe's dtype (float32).
"""

from __future__ import annotations

import itertools
import math

from matplotlib.figure import Figure

from fastformer_bench.report import probe_cells
from fastformer_bench.report.fmt import count, si, times
from fastformer_bench.report.plotting import legend, percent, save, style, units
from fastformer_bench.report.probe_decision import MIXER_COLOURS, passed, pct1, where

#: how the figure tells the additive implementations apart: the probe's own first (filled), the others by name
MARKERS = ("o", "^", "D", "v", "P", "X")


def _nearest(wanted: int, measured: list[int]) -> int:
    """The measured value nearest ``wanted`` on a log scale (a tie: the larger)."""
    return min(measured, key=lambda m: (abs(math.log(m / wanted)), -m))


def _timed(speed: list[dict]) -> list[dict]:
    """The speed records a join can read: ok, forward, float32, one setting per implementation."""
    ok = [r for r in speed if r.get("status") == "ok" and r.get("mode") == "fwd" and r.get("kind") != "probe"
          and r.get("dtype", "float32") == "float32" and r.get("time_median") and r.get("seq_len")]
    picked = []
    for impl in sorted({r["impl"] for r in ok}):
        mine = [r for r in ok if r["impl"] == impl]
        scope = "core" if any(r.get("scope") == "core" for r in mine) else mine[0].get("scope")
        mine = [r for r in mine if r.get("scope") == scope]
        batch = min(int(r.get("batch") or 1) for r in mine)
        threads = min(int(r.get("threads") or 1) for r in mine)
        picked += [r for r in mine if int(r.get("batch") or 1) == batch and int(r.get("threads") or 1) == threads]
    return picked


def time_per_token(speed: list[dict], impl: str, width: int, seq_len: int, columns: int | None = None) -> dict | None:
    """``impl``'s forward time per token at ``width`` and ``seq_len``, or at the nearest measured (said by the
    returned width and seq_len); None where ``impl`` was not measured."""
    mine = [r for r in _timed(speed) if r["impl"] == impl]
    if columns is not None and any(r.get("columns") == columns for r in mine):
        mine = [r for r in mine if r.get("columns") == columns]
    if not mine:
        return None
    at_width = _nearest(width, sorted({int(r["width"]) for r in mine}))
    mine = [r for r in mine if int(r["width"]) == at_width]
    at_n = _nearest(seq_len, sorted({int(r["seq_len"]) for r in mine}))
    mine = sorted((r for r in mine if int(r["seq_len"]) == at_n), key=lambda r: r["time_median"])
    r = mine[len(mine) // 2]
    return {"impl": impl, "width": at_width, "seq_len": at_n, "scope": r.get("scope"),
            "batch": int(r.get("batch") or 1), "threads": r.get("threads"),
            "s_per_token": float(r["time_median"]) / (int(r.get("batch") or 1) * at_n)}


def additive_impls(speed: list[dict]) -> list[str]:
    """The linear-time additive implementations the speed records hold (the quadratic reference is ground truth,
    not a way to run the model)."""
    return sorted({r["impl"] for r in _timed(speed) if r.get("family") == "additive"
                   and r.get("complexity") != "quadratic"})


def _deciding(headlines: list[dict], task: str, bar: float) -> tuple[dict, bool]:
    """The task's conclusive comparison at the largest N (ties: the largest gap), and True; where it has none,
    the comparison where softmax came closest (ties: the larger N), and False."""
    mine = [h for h in headlines if h["task"] == task]
    learned = [h for h in mine if passed(h, bar)]
    if learned:
        return max(learned, key=lambda h: (h["seq_len"], h["gap_points"], h["pairs"])), True
    return max(mine, key=lambda h: (h["softmax"], h["seq_len"], h["pairs"])), False


def join(headlines: list[dict], frame_impls: dict[str, str], speed: list[dict], bar: float) -> list[dict]:
    """One row per task: accuracies and times per token, and whether the comparison is conclusive (an
    inconclusive row states no difference); ``frame_impls``: the probe's implementation per mixer (the records'
    ``impl`` of each)."""
    rows = []
    for task in sorted({h["task"] for h in headlines}):
        h, conclusive = _deciding(headlines, task, bar)
        soft = time_per_token(speed, frame_impls["softmax"], h["width"], h["seq_len"])
        additive = [t for t in (time_per_token(speed, impl, h["width"], h["seq_len"], 3)
                                for impl in sorted({frame_impls["additive"], *additive_impls(speed)})) if t]
        for t in additive:
            t["faster"] = soft["s_per_token"] / t["s_per_token"] if soft else None
            t["probe_impl"] = t["impl"] == frame_impls["additive"]
        rows.append({**{k: h[k] for k in ("task", "seq_len", "width", "pairs", "steps", "additive", "softmax",
                                          "gap_points")},
                     "conclusive": conclusive, "bar": bar, "control_note": h.get("control_note"),
                     "softmax_time": soft, "additive_times": additive})
    return rows


def _missing(row: dict) -> list[str]:
    """What the speed study did not measure at the probe's width or N, in words."""
    notes = []
    timed = [t for t in [row["softmax_time"], *row["additive_times"]] if t]
    widths = sorted({t["width"] for t in timed})
    ns = sorted({t["seq_len"] for t in timed})
    if widths and widths != [row["width"]]:
        notes.append(f"width {row['width']} not measured, timed at width {', '.join(map(str, widths))}")
    if ns and ns != [row["seq_len"]]:
        notes.append(f"N = {count(row['seq_len'])} not measured, timed at N = {', '.join(count(n) for n in ns)}")
    return notes


def _probe_time(row: dict) -> dict | None:
    return next((t for t in row["additive_times"] if t["probe_impl"]), None)


def _fastest(row: dict) -> dict | None:
    return min(row["additive_times"], key=lambda t: t["s_per_token"], default=None)


def table_rows(rows: list[dict], steps: int | None) -> list[dict]:
    out = []
    for r in rows:
        soft, mine, best = r["softmax_time"], _probe_time(r), _fastest(r)
        out.append({
            "task": r["task"], "probe at": where(r, steps),
            "accuracy softmax / additive": f"{pct1(r['softmax'])} / {pct1(r['additive'])}",
            "given up (points)": f"{r['gap_points']:+.1f}" if r.get("conclusive", True) else "– (inconclusive)",
            "timed at": f"N = {count(soft['seq_len'])}, width {soft['width']}" if soft else "-",
            "softmax time/token": f"{si(soft['s_per_token'], 's')} ({soft['impl']})" if soft else "-",
            "additive time/token (probe's impl)": (f"{si(mine['s_per_token'], 's')} ({mine['impl']}), "
                                                   f"{times(mine['faster'])} faster") if mine else "-",
            "fastest additive": (f"{si(best['s_per_token'], 's')} ({best['impl']}), {times(best['faster'])} faster")
            if best else "-",
            "note": "; ".join(_missing(r)) or "-"})
    return out


def sentences(rows: list[dict], steps: int | None) -> list[str]:
    lines = []
    for r in rows:
        soft, mine, best = r["softmax_time"], _probe_time(r), _fastest(r)
        if not soft or not mine:
            lines.append(f"{r['task']}: the speed study did not time both mixers' implementations.")
            continue
        faster = f"{times(mine['faster'])} less time per token ({mine['impl']}"
        if best and best is not mine:
            faster += f"; {times(best['faster'])} with {best['impl']}"
        note = "; ".join(_missing(r))
        if not r.get("conclusive", True):
            lines.append(f"{r['task']} at {where(r, steps)}: inconclusive ("
                         f"{r.get('control_note') or 'softmax below ' + pct1(r.get('bar'))}), so no accuracy given "
                         f"up is stated; additive attention takes {times(mine['faster'])} less time per token there "
                         f"({mine['impl']}).")
            continue
        lines.append(f"{r['task']} at {where(r, steps)}: additive attention buys {faster}) and gives up "
                     f"{r['gap_points']:.1f} points of accuracy ({pct1(r['additive'])} against "
                     f"{pct1(r['softmax'])})" + (f" ({note})." if note else "."))
    return lines


def figure(rows: list[dict], directory, steps: int | None) -> list[dict]:
    """Accuracy against forward time per token, one panel per task: softmax, and each additive implementation at
    the additive model's accuracy (filled: the probe's own implementation)."""
    rows = [r for r in rows if r["softmax_time"] and r["additive_times"]]
    if not rows:
        return []
    with style():
        fig = Figure(figsize=(4.0 * len(rows), 4.0), layout="constrained")
        panels = fig.subplots(1, len(rows), squeeze=False)[0]
        for ax, r in zip(panels, rows):
            soft = r["softmax_time"]
            grey = not r.get("conclusive", True)  # greyed, one legend entry: the control did not learn the cell
            greyed = {"color": probe_cells.GREY, "hatch": probe_cells.HATCH,
                      "label": probe_cells.label(r.get("bar") or probe_cells.BAR)} if grey else {}
            ax.scatter([soft["s_per_token"]], [r["softmax"]], marker="s", s=60, zorder=4, **{
                "color": MIXER_COLOURS["softmax"], "label": f"softmax ({soft['impl']})", "edgecolors":
                MIXER_COLOURS["softmax"], **greyed})
            xs = [soft["s_per_token"]]
            ordered = sorted(r["additive_times"], key=lambda t: (not t["probe_impl"], t["impl"]))
            for marker, t in zip(itertools.cycle(MARKERS), ordered):
                ax.scatter([t["s_per_token"]], [r["additive"]], marker=marker, s=60, zorder=4, linewidths=1.5,
                           edgecolors=MIXER_COLOURS["additive"], **{
                               "color": MIXER_COLOURS["additive"] if t["probe_impl"] else "white",
                               "label": f"additive ({t['impl']}" + (", the probe's)" if t["probe_impl"] else ")"),
                               **greyed})
                xs.append(t["s_per_token"])
            told = [f"{t['impl']}: {times(t['faster'])}" for t in
                    sorted(r["additive_times"], key=lambda t: -t["faster"] if t["faster"] else 0)]
            told.append(f"accuracy given up: {r['gap_points']:.1f} points" if not grey else
                        "accuracy given up: inconclusive\n(control below the bar)")
            ax.text(0.5, 0.5, "faster than softmax\n" + "\n".join(told),
                    transform=ax.transAxes, ha="center", va="center", fontsize="small",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#BBBBBB"})
            ax.set(xscale="log", xlim=(min(xs) / 2, max(xs) * 2), ylim=(0, 1.1),
                   title=f"{r['task']}\nprobe {where(r, steps)}\ntimed N = {count(soft['seq_len'])}, "
                         f"width {soft['width']}",
                   xlabel="forward time per token (log)", ylabel="held-out accuracy")
            ax.title.set_fontsize("small")
            units(ax.xaxis, "s")
            percent(ax.yaxis)
        legend(fig, list(panels))
        return [save(fig, directory, "probe_speed", "What additive attention buys (time per token, × faster than "
                     "softmax) and gives up (points of accuracy), per task", "probe_speed")]


def section(rows: list[dict], inputs: list[str], steps: int | None, drawn: list[dict]) -> list[str]:
    """The report's section: the join's table, its sentences and its figure."""
    from fastformer_bench.report import output

    if not rows:
        return []
    scopes = sorted({t["scope"] for r in rows for t in [r["softmax_time"], *r["additive_times"]] if t})
    return ["## Capability beside speed", "",
            f"Per task, the conclusive comparison (its control learned the cell) at the largest N, beside the forward "
            f"time per token (time / (batch · N), the {', '.join(scopes)} scope, batch 1, 1 thread, float32) that "
            f"the speed study {', '.join(inputs)} measured for each mixer's implementation at the same width and N, "
            "or at the nearest measured (the note says so). All additive implementations compute the same function, "
            "so they share the additive model's accuracy; × faster is softmax's time per token over theirs. A task "
            "with no conclusive comparison shows the one where softmax came closest, greyed, and states no "
            "accuracy given up.", "",
            output.table(table_rows(rows, steps)), "", *(f"- {line}" for line in sentences(rows, steps)), "",
            *[line for f in drawn for line in (f"![{f['title']}]({f['file']})", "")]]
