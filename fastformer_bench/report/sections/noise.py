"""Noise: how wide the timed points' p20-p80 spreads are, what re-measuring noisy windows did, and the points
timed while other tasks competed for a CPU."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import noise


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"noise": noise.noise(frame)}


def device_lines(n: dict) -> list[str]:
    """One sentence per device with points above the noise floor."""
    lines = []
    for d in n.get("devices", []):
        if not d["above_floor"]:
            continue
        line = (f"{d['device']}: {d['within_target']} of {d['above_floor']} points above "
                f"{n['floor_s'] * 1e3:g} ms are within the {n['target'] * 100:g}% p20-p80 target "
                f"(median {d['median_spread_above_floor'] * 100:.1f}%).")
        if d["remeasured"]:
            line += (f" {d['remeasured']} points had a noisy sampling window and were measured again (up to "
                     f"{d['max_windows']} windows; the tightest window is kept and every sample stays in the "
                     "record); "
                     f"the kept median is {d['kept_vs_pooled']:.3f}x the median of all their samples (lowest "
                     f"{d['kept_vs_pooled_min']:.3f}x, {d['kept_vs_pooled_min_point']}), which is how much choosing "
                     "a quiet window moved them.")
        if d.get("revisited"):
            were = "was" if d["revisited"] == 1 else "were"
            line += (f" {d['revisited']} of them {were} still noisy after their windows and {were} measured again "
                     "at the end of the sweep, minutes later; the tightest measurement is kept.")
        if d.get("pressure_measured"):
            limit = f"{n['contention_limit'] * 100:g}%"
            if d["contended"]:
                named = "; ".join(f"{label} ({value * 100:.0f}%)" for label, value in d["contended"])
                line += (f" Other tasks waited for a CPU during more than {limit} of the timing of: {named}; "
                         "such load slows every sample alike, so these times may be inflated beyond their spread.")
            else:
                line += f" No point was timed while other tasks waited for a CPU more than {limit} of the time (PSI)."
        if d.get("outside_target"):
            named = "; ".join(f"{label} ({value * 100:.1f}%)" for label, value in d["outside_target"])
            line += f" Outside the target, so read with that noise: {named}."
        lines.append(line)
    return lines


def caveats(s: dict) -> list[str]:
    n = s["noise"]
    spread = (f"the p20-p80 spread is {n['median_spread'] * 100:.1f}% of the median for the typical point "
              f"(largest {n['max_spread'] * 100:.1f}%)") if n["median_spread"] is not None else "no spread recorded"
    return [f"- Noise: {spread}. Differences smaller than that spread are not evidence.",
            *[f"  - {line}" for line in device_lines(n)]]
