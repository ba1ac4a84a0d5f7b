"""The points measured: how many, in which status, which softmax baselines they are held against, and the
points left out because other tasks held their CPU."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    statuses = frame["status"].value_counts()
    return {"points": len(frame), "statuses": {s: int(c) for s, c in sorted(statuses.items())},
            "baselines": analysis.baselines(facts), "devices": sorted({str(d) for d in frame["device"]})}


def conclusions(s: dict) -> list[str]:
    statuses = ", ".join(f"{c} {k}" for k, c in s["statuses"].items())
    return [f"- {s['points']} points: {statuses}."]


def caveats(s: dict) -> list[str]:
    count = s["statuses"].get("contended", 0)
    if s.get("contended_included"):
        return [f"- **Contended points included on request:** {count} points timed while another task held "
                "their CPU beyond the limit are treated as ok here; their times may be inflated."]
    if not count:
        return []
    return [f"- {count} point{'s were' if count > 1 else ' was'} timed while another task held the timed CPU beyond "
            "the limit, twice (status contended): kept in the results, left out of every fit, figure and "
            "crossover (`fastformer-bench report --include-contended` shows them)."]
