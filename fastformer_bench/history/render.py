"""`history show`: each machine's trend figure (median per commit, p20-p80 band, steps marked) and HISTORY.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fastformer_bench.history import findings
from fastformer_bench.history.store import check_one_machine, entries
from fastformer_bench.history.trend import DEFAULT_MARGIN, outliers, series, steps
from fastformer_bench.report.fmt import pct
from fastformer_bench.report.plotting import save, style, units

MAX_PANELS = 12


def _figure(machine: str, lines: dict[str, dict], found: dict[str, list], directory: Path, spikes: dict) -> dict:
    labels = sorted(lines)[:MAX_PANELS]
    columns = min(3, len(labels))
    rows = math.ceil(len(labels) / columns)
    with style():
        fig = Figure(figsize=(5.0 * columns, 3.0 * rows + 0.6), layout="constrained")
        panels = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax, label in zip(panels, labels):
            line = lines[label]
            x = np.arange(len(line["commits"]))
            counts = line.get("unit") == "instructions"
            median = np.array(line["median"], dtype=float)
            ax.plot(x, median, marker="o", color="#0072B2", label="median")
            if all(v is not None for v in line["p20"] + line["p80"]):
                ax.fill_between(x, np.array(line["p20"], float), np.array(line["p80"], float),
                                color="#0072B2", alpha=0.2, label="p20–p80")
            for step in found[label]:
                ax.axvline(step.at - 0.5, color="#B2182B", linestyle="--")
                ax.annotate(f"{step.ratio:.3f}×", (step.at - 0.5, float(np.nanmax(median))), color="#B2182B",
                            fontsize="small", ha="left", va="top")
            for spike in spikes[label]:  # a one-commit outlier: ringed and labelled, never a step
                ax.plot(spike.at, median[spike.at], "o", ms=12, mfc="none", mec="#B2182B", mew=1.5)
                ax.annotate(f"{spike.ratio:.2f}×", (spike.at, median[spike.at]), color="#B2182B", fontsize="small",
                            textcoords="offset points", xytext=(6, 6))
            ax.set_xticks(x, [c[:7] for c in line["commits"]], rotation=45, fontsize="small", ha="right")
            ax.set(title=label, ylabel="instructions per call" if counts else "time per call")
            units(ax.yaxis, "k" if counts else "s")
            ax.title.set_fontsize("small")
        for ax in panels[len(labels):]:
            ax.set_visible(False)
        name = f"trend_{machine}"[:80]
        return save(fig, directory, name,
                    f"Trend per commit on {machine} (dashed: a detected step; ringed: a one-commit outlier)",
                    "history_trend")


def show(history_dir: str | Path, out: str | Path, *, normalize: bool = False,
         margin: float = DEFAULT_MARGIN) -> dict:
    """Write out/HISTORY.md, out/history.json and a trend figure per machine; return the summary."""
    out_dir = Path(out)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    summary: dict = {"machines": [], "margin": margin, "normalized": normalize}
    for machine, filed in entries(history_dir).items():
        check_one_machine(filed, normalize)
        lines = series(filed, normalize)
        found = {label: steps(line["median"], line["commits"], margin) for label, line in lines.items()}
        spikes = {label: outliers(line["median"], line["commits"], margin) for label, line in lines.items()}
        figure = _figure(machine, lines, found, out_dir / "figures", spikes)
        summary["machines"].append({
            "machine": machine, "fingerprint": filed[0]["fingerprint"], "runs": len(filed),
            "commits": [e["commit"] for e in filed], "figure": figure["file"],
            "steps": [{"point": label, **s.as_dict()} for label in sorted(found) for s in found[label]],
            **findings.listed(lines, spikes)})
    (out_dir / "history.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out_dir / "HISTORY.md").write_text(_markdown(summary), encoding="utf-8")
    return summary


def answer(summary: dict) -> str:
    """One sentence: how many steps the history holds, over how many machines, runs and commits."""
    machines = summary["machines"]
    runs = sum(m["runs"] for m in machines)
    found = [s for m in machines for s in m["steps"]]
    where = f"{len(machines)} machine{'s' if len(machines) != 1 else ''}, {runs} filed run{'s' if runs != 1 else ''}"
    if not found:
        return (f"**No step** beyond {pct(summary['margin'])} in any point's trend ({where}): no filed "
                "commit moved a point's level for good." + findings.sentence(summary))
    slower = [s for s in found if s["ratio"] > 1]
    return (f"**{len(found)} step{'s' if len(found) != 1 else ''}** beyond {pct(summary['margin'])} ({where}): "
            f"{len(slower)} slower, {len(found) - len(slower)} faster; the table under each machine names the "
            "commit and the point." + findings.sentence(summary))


def _markdown(summary: dict) -> str:
    lines = ["# Performance history", "", answer(summary), "",
             "Per machine (its fingerprint: device, CPU model, torch, threads, and the CPU's signature and cache sizes "
             "where the run recorded them), the median time per call of each "
             "point at each filed commit, in commit order. Steps: PELT change points (ruptures) on log medians, "
             f"kept when the 95 % bootstrap interval of the step's ratio lies beyond {pct(summary['margin'])}"
             + ("; memory-bound points scaled by the runs' copy bandwidth." if summary["normalized"] else "."), ""]
    for machine in summary["machines"]:
        lines += [f"## {machine['machine']}", "", f"{machine['runs']} runs, commits "
                  + ", ".join(c[:7] for c in machine["commits"]) + ".", "",
                  f"![trend]({machine['figure']})", "", *findings.markdown(machine)]
        if not machine["steps"]:
            lines += ["No step.", ""]
            continue
        lines += ["| point | step at commit | ratio | 95 % interval |", "|---|---|---|---|"]
        lines += [f"| {s['point']} | {s['commit'][:12]} | {s['ratio']:.3f} | {s['ci_low']:.3f}–{s['ci_high']:.3f} |"
                  for s in machine["steps"]]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
