"""The two helpers every analysis of the report shares: stable numbers for JSON, and the points a time may use."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def num(value, digits: int = 6):
    """A JSON-ready number with fixed significant digits (None for missing/non-finite), for stable output."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """Points whose time may be used: status ok and a positive, finite median."""
    t = frame["time_median"]
    return frame[(frame["status"] == "ok") & np.isfinite(t) & (t > 0)]
