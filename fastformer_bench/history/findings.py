"""What a history lists besides its steps: the one-commit outliers and the gaps of each point's trend, as the
summary's fields, HISTORY.md's tables and one sentence; the figure (render.py) and the page (html.py) mark the
same ones. JSON and text only, no plotting library.
"""

from __future__ import annotations

from fastformer_bench.history.trend import Outlier


def listed(lines: dict[str, dict], spikes: dict[str, list[Outlier]]) -> dict:
    """The summary's "outliers" (one per point and commit) and "gaps" (a commit with no time for a point, and
    why), each sorted by point."""
    gaps = [{"point": label, "at": at, "commit": commit, "reason": reason}
            for label in sorted(lines)
            for at, (commit, reason) in enumerate(zip(lines[label]["commits"], lines[label].get("reasons", [])))
            if reason]
    return {"outliers": [{"point": label, **o.as_dict()} for label in sorted(spikes) for o in spikes[label]],
            "gaps": gaps}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def sentence(summary: dict) -> str:
    """What the answer adds about outliers and gaps (empty when there are none), starting with a space."""
    outliers = [o for m in summary["machines"] for o in m.get("outliers", [])]
    gaps = {(g["commit"], g["reason"]) for m in summary["machines"] for g in m.get("gaps", [])}
    said = []
    if outliers:
        worst = max(outliers, key=lambda o: abs(o["ratio"] - 1))
        said.append(f"{_plural(len(outliers), 'one-commit outlier')} (a single commit off its trend, its neighbours "
                    f"back on it; the largest {worst['ratio']:.2f}× at {worst['commit'][:12]}), not a step")
    if gaps:
        said.append(f"{_plural(len({c for c, _ in gaps}), 'commit')} with a gap (no time: the code failed to "
                    "import or a point failed its check)")
    return f" Besides: {'; '.join(said)}." if said else ""


def markdown(machine: dict) -> list[str]:
    """HISTORY.md's lines for one machine's outliers and gaps (none when it has neither)."""
    lines: list[str] = []
    if machine.get("outliers"):
        lines += [f"{_plural(len(machine['outliers']), 'outlier')}: one commit off the trend by more than the noise "
                  "margin, its neighbours on both sides back on it (a noisy run, or a change undone by the next "
                  "commit); not a step, and left out of the step detection.", "",
                  "| point | commit | ratio to its neighbours | noise margin |", "|---|---|---|---|"]
        lines += [f"| {o['point']} | {o['commit'][:12]} | {o['ratio']:.3f} | ×{o['threshold']:.3f} |"
                  for o in machine["outliers"]]
        lines.append("")
    if machine.get("gaps"):
        grouped: dict[tuple[str, str], list[str]] = {}
        for gap in machine["gaps"]:
            grouped.setdefault((gap["commit"], gap["reason"]), []).append(gap["point"])
        lines += ["Gaps: commits with no time for a point, and why (never drawn as a time).", "",
                  "| commit | points | reason |", "|---|---|---|"]
        lines += [f"| {commit[:12]} | {', '.join(points)} | {reason.replace('|', '/')} |"
                  for (commit, reason), points in grouped.items()]
        lines.append("")
    return lines
