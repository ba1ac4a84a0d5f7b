"""How noisy the timed points are, per device: spreads against the target, re-measured windows, revisits, and
the points timed while other tasks competed for a CPU. Pure pandas, like the rest of the report's analysis."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fastformer_bench.report.numbers import num, timed

#: the harness's CPU noise target: (p80 - p20) / median within one run, for points above 1 ms
SPREAD_TARGET, SPREAD_FLOOR_S = 0.05, 1e-3
#: share of a point's timing during which some other task waited for a CPU (PSI) above which the report warns
CONTENTION_LIMIT = 0.05


def _pressure(contention) -> float:
    value = contention.get("cpu_pressure") if isinstance(contention, dict) else None
    return math.nan if value is None else float(value)


def _point_label(r: pd.Series) -> str:
    label = f"{r['impl']} {r['mode']} {r['scope']} N={int(r['seq_len'])} D={int(r['width'])} C={int(r['columns'])}"
    return label + (f" B={int(r['batch'])}" if int(r["batch"]) != 1 else "") + (" masked" if r["masked"] else "")


def noise(frame: pd.DataFrame) -> dict:
    """Relative p20-p80 spread of the timed points, per device, and what re-measuring noisy windows did.

    ``above_floor``/``within_target`` count points above 1 ms and those whose kept window is within 5 %;
    ``revisited`` counts points measured again at the end of the sweep (runner.revisit).
    For points measured in several windows, ``kept_vs_pooled`` is the median over points of the kept window's
    median / the median of every sample of every window: how far choosing a quiet window moved the figure.
    """
    t = timed(frame)
    if t.empty:
        return {"n": 0, "median_spread": None, "max_spread": None, "devices": []}
    spread = (t["time_p80"] - t["time_p20"]) / t["time_median"]
    attempts = t["timing_attempts"].fillna(1) if "timing_attempts" in t else pd.Series(1, index=t.index)
    revisits = t["revisits"].fillna(0) if "revisits" in t else pd.Series(0, index=t.index)
    devices = []
    for device, idx in t.groupby("device", sort=True).groups.items():
        rows, above, spreads = t.loc[idx], t.loc[idx, "time_median"] > SPREAD_FLOOR_S, spread.loc[idx]
        shifts, shifted = [], []
        for _, r in rows[attempts.loc[idx] > 1].iterrows():
            pooled = list(r["samples"]) + [v for window in (r.get("rejected_samples") or []) for v in window]
            shifts.append(r["time_median"] / float(np.median(pooled)))
            shifted.append(_point_label(r))
        outside = spreads[above & (spreads > SPREAD_TARGET)].sort_values(ascending=False)
        pressure = (rows["contention"].map(_pressure) if "contention" in rows else pd.Series(math.nan, rows.index))
        contended = pressure[pressure > CONTENTION_LIMIT].sort_values(ascending=False)
        devices.append({
            "device": device, "n": len(rows), "above_floor": int(above.sum()),
            "within_target": int((spreads[above] <= SPREAD_TARGET).sum()),
            "median_spread_above_floor": num(spreads[above].median(), 3) if above.any() else None,
            "remeasured": int((attempts.loc[idx] > 1).sum()), "max_windows": int(attempts.loc[idx].max()),
            "revisited": int((revisits.loc[idx] > 0).sum()),
            "kept_vs_pooled": num(float(np.median(shifts)), 3) if shifts else None,
            "kept_vs_pooled_min": num(min(shifts), 3) if shifts else None,
            "kept_vs_pooled_min_point": shifted[int(np.argmin(shifts))] if shifts else None,
            # the points whose figures carry more noise than the target: named, so a reader can discount them
            "outside_target": [[_point_label(t.loc[i]), num(v, 3)] for i, v in outside.items()],
            # a steady competitor slows every sample alike: tight spread, inflated time (measure.env.contention_since)
            "pressure_measured": int(pressure.notna().sum()),
            "contended": [[_point_label(t.loc[i]), num(v, 3)] for i, v in contended.items()],
        })
    return {"n": int(spread.notna().sum()), "median_spread": num(spread.median(), 3),
            "max_spread": num(spread.max(), 3),
            "target": SPREAD_TARGET, "floor_s": SPREAD_FLOOR_S, "contention_limit": CONTENTION_LIMIT,
            "devices": devices}
