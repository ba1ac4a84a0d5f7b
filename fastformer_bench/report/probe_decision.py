"""The decision the probe report leads with: per task, what additive attention gives up against softmax
attention, in points of accuracy, where the softmax control shows that the training worked.

A task's row is its comparison (C = 3, from the report's headlines) with the largest gap among the conclusive
ones: the most that additive attention was seen to give up on a task the training can teach. A comparison is
conclusive where its cell is (probe_cells: the runner's ``cell_conclusive`` where the records carry it, else
softmax's mean at the bar). Where no comparison of a task is conclusive, the row is the one where softmax came
closest, and it states no difference: the probe cannot tell that task's cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fastformer_bench.report import probe_cells
from fastformer_bench.report.fmt import count
from fastformer_bench.report.fmt import pct as percentage
from fastformer_bench.report.plotting import legend, percent, save, style

MIXER_COLOURS = {"additive": "#0072B2", "softmax": "#B2182B"}


def pct1(share: float | None) -> str:
    """An accuracy as people read it: '98.1 %'."""
    return percentage(share, 1)


def where(h: dict, steps: int | None = None) -> str:
    """'N = 192, width 64, 64 pairs, 1,000 steps' (the steps only where they differ from the settings')."""
    text = f"N = {count(h['seq_len'])}, width {h['width']}" + (f", {h['pairs']} pairs" if h["task"] == "mqar" else "")
    return text + (f", {count(h['steps'])} steps" if h.get("steps") not in (None, steps) else "")


def passed(h: dict, bar: float) -> bool:
    """Whether a comparison's control passed: its cell's verdict where the headline carries one, else softmax's
    mean at the bar."""
    return bool(h["conclusive"]) if h.get("conclusive") is not None else h["softmax"] >= bar


def decide(headlines: list[dict], kinds: dict[str, str], bar: float) -> list[dict]:
    """One row per task: its deciding comparison, whether its control passed, and the gaps over every comparison
    whose control passed."""
    rows = []
    for task in sorted({h["task"] for h in headlines}, key=lambda t: (kinds.get(t, ""), t)):
        mine = [h for h in headlines if h["task"] == task]
        learned = [h for h in mine if passed(h, bar)]
        pool = learned or mine
        # the largest gap where the control passed (else where softmax came closest); ties: the longer N
        key = (lambda h: (h["gap_points"], h["seq_len"], h["pairs"])) if learned else \
            (lambda h: (h["softmax"], h["seq_len"], h["pairs"]))
        pick = max(pool, key=key)
        gaps = [h["gap_points"] for h in learned]
        recorded = pick.get("conclusive") is not None and "extensions" in pick
        control = {"bar": bar, "passed": passed(pick, bar),
                   "every_seed": passed(pick, bar) if recorded else pick["softmax_range"][0] >= bar}
        if recorded and not control["passed"] and pick.get("control_note"):  # older records: today's words
            control["note"] = pick["control_note"]
        extra = {k: pick[k] for k in ("lr", "extensions") if k in pick}
        rows.append({**{k: pick[k] for k in ("task", "seq_len", "width", "pairs", "steps", "additive", "softmax",
                                             "additive_range", "softmax_range", "seeds", "gap_points", "sweep")},
                     "chance": pick.get("chance"), "kind": kinds.get(task), "control": control, **extra,
                     "learned": len(learned), "compared": len(mine),
                     "gap_range": [min(gaps), max(gaps)] if gaps else None})
    return rows


def _control(row: dict) -> str:
    c = row["control"]
    if c["passed"] and c["every_seed"]:
        return "yes"
    if c["passed"]:
        return f"yes in the mean (lowest seed {pct1(row['softmax_range'][0])})"
    if c.get("note"):
        return f"no, inconclusive: {c['note']}"
    return f"no: softmax below {pct1(c['bar'])}" + (f" (chance {pct1(row['chance'])})" if row.get("chance") else "")


def _budget(r: dict) -> dict:
    """The chosen learning rates and the budget, where the records carry them."""
    if "extensions" not in r and "lr" not in r:
        return {}
    lr = r.get("lr") or {}
    return {"lr softmax / additive": f"{lr.get('softmax', '-')} / {lr.get('additive', '-')}",
            "steps": probe_cells.budget(r["steps"], r.get("extensions"))}


def table_rows(rows: list[dict], steps: int | None) -> list[dict]:
    return [{"task": f"{r['task']} ({r['kind']})" if r.get("kind") else r["task"],
             "at": where(r, r["steps"] if _budget(r) else steps), **_budget(r),
             "softmax": f"{pct1(r['softmax'])} [{pct1(r['softmax_range'][0])}–{pct1(r['softmax_range'][1])}]",
             "additive": f"{pct1(r['additive'])} [{pct1(r['additive_range'][0])}–{pct1(r['additive_range'][1])}]",
             "difference (points)": f"{r['gap_points']:+.1f}" if r["control"]["passed"] else "– (inconclusive)",
             "chance": pct1(r.get("chance")), "control passed ¹": _control(r),
             "difference where the control passed": (f"{r['gap_range'][0]:+.1f} to {r['gap_range'][1]:+.1f} "
                                                     f"({r['learned']} of {r['compared']} comparisons)")
             if r["gap_range"] else f"– (0 of {r['compared']})"} for r in rows]


def _against(row: dict) -> str:
    """'94.8 % against 97.3 %', or '100.0 % for both'."""
    mine, theirs = pct1(row["additive"]), pct1(row["softmax"])
    return f"{mine} for both" if mine == theirs else f"{mine} against {theirs}"


def training_conditions(settings: dict) -> str | None:
    """The training the answer's accuracies come from, in one clause: 'float32 on the CPU, one thread per model,
    the best of learning rates 0.001 / 0.003 / 0.01 per mixer and seed on 128 validation sequences, 300 steps, a
    cell doubled up to 1,200 where its control missed 95 %'; None without settings."""
    if not settings:
        return None
    threads = settings.get("threads")
    parts = ["float32 on the CPU" + (f", {count(threads)} thread{'s' if threads != 1 else ''} per model"
                                      if threads else "")]
    lrs = settings.get("lrs") or []
    if len(lrs) > 1:
        validation = (f" on {count(settings['val_examples'])} validation sequences"
                      if settings.get("val_examples") else "")
        parts.append(f"the best of learning rates {' / '.join(f'{lr:g}' for lr in lrs)} per mixer and seed"
                     + validation)
    elif lrs:
        parts.append(f"learning rate {lrs[0]:g}")
    if settings.get("steps"):
        cap = settings.get("max_steps")
        parts.append(f"{count(settings['steps'])} steps" + (
            f", a cell doubled up to {count(cap)} where its control missed {pct1(settings.get('bar', 0.95))[:-2]} %"
            if cap and cap > settings["steps"] else ""))
    return ", ".join(parts)


def answer(rows: list[dict], steps: int | None, settings: dict | None = None) -> list[str]:
    """A sentence per task kind the training could teach, and one for the tasks it could not."""
    out = []
    for kind in sorted({r["kind"] for r in rows if r["control"]["passed"]}, key=str):
        mine = [r for r in rows if r["kind"] == kind and r["control"]["passed"]]
        worst = max(mine, key=lambda r: r["gap_points"])
        others = [r for r in mine if r is not worst]
        also = "; " + "; ".join(f"{r['task']} {_against(r)}" for r in others) if others else ""
        names = ", ".join(r["task"] for r in mine)
        out.append(f"On {kind or 'the'} tasks ({names}) additive attention gives up at most "
                   f"{worst['gap_points']:.1f} points of accuracy where softmax learned the task: {worst['task']} "
                   f"{_against(worst)} at {where(worst, steps)}{also}.")
    failed = [r for r in rows if not r["control"]["passed"]]
    if any(r["control"].get("note") for r in failed):
        said = "; ".join(f"{r['task']}: {r['control'].get('note') or 'softmax at most ' + pct1(r['softmax'])}"
                         for r in failed)
        out.append(f"No cell of {', '.join(r['task'] for r in failed)} is conclusive: the control never reached "
                   f"{pct1(failed[0]['control']['bar'])} on every seed within the budget ({said}). The probe cannot "
                   "tell what additive attention gives up there.")
    elif failed:
        names = ", ".join(r["task"] for r in failed)
        best = "; ".join(f"{r['task']}: softmax at most {pct1(r['softmax'])}, chance {pct1(r.get('chance'))}"
                         for r in failed)
        out.append(f"Softmax attention did not learn {names} within this budget ({best}), so the probe cannot "
                   "tell what additive attention gives up there.")
    if out and training_conditions(settings or {}):
        out.append(f"Trained with {training_conditions(settings)}.")
    return out or ["The run compared no task between the two mixers at C = 3."]


def figure(rows: list[dict], directory: Path, steps: int | None) -> list[dict]:
    """Headline: per task, the deciding comparison's accuracy of each mixer (bar: the mean; whiskers: the seeds'
    range; black tick: chance)."""
    if not rows:
        return []
    with style():
        fig = Figure(figsize=(8.6, 1.2 + 0.95 * len(rows)), layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(rows))[::-1]
        grey = [not r["control"]["passed"] for r in rows]
        for offset, mixer in ((0.18, "softmax"), (-0.18, "additive")):
            means = [r[mixer] for r in rows]
            # the mean of equal seeds can round past them: a whisker is never below zero
            low = [max(0.0, r[mixer] - r[f"{mixer}_range"][0]) for r in rows]
            high = [max(0.0, r[f"{mixer}_range"][1] - r[mixer]) for r in rows]
            bars = ax.barh(y + offset, means, height=0.34, color=MIXER_COLOURS[mixer], label=mixer,
                           xerr=[low, high], error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
            for patch, inconclusive in zip(bars.patches, grey):
                if inconclusive:  # greyed: the control did not learn the task, the bars state no difference
                    patch.set(facecolor=probe_cells.GREY, edgecolor=MIXER_COLOURS[mixer], hatch=probe_cells.HATCH)
        for yy, r in zip(y, rows):
            if r.get("chance") is not None:
                ax.plot([r["chance"]] * 2, [yy - 0.42, yy + 0.42], color="black", lw=1.5)
        ax.set_yticks(y, [f"{r['task']}\n{where(r, steps)}" for r in rows], fontsize="small")
        ax.set(xlim=(0, 1.02), xlabel="held-out accuracy (bar: mean over seeds; whiskers: lowest and highest seed)")
        percent(ax.xaxis)
        ax.grid(axis="y", visible=False)
        extra = [(ax.plot([], [], color="black", lw=1.5)[0], "chance")]
        if any(grey):
            extra.append(probe_cells.legend_entry(rows[0]["control"]["bar"]))
        legend(fig, [ax], extra)
        return [save(fig, directory, "probe_decision", "What additive attention gives up, per task (the deciding "
                     "comparison of each)", "probe_decision")]
