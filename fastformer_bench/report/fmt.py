"""Number formatting shared by the figures and REPORT.md (its own module: markdown reads the figure spec).

Every number a person reads goes through here: 3 significant digits, SI prefixes on units, thousands separators
on counts and ratios (``1,380×``, ``N = 131,072``), percentages with a space (``118 %``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

_PREFIXES = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]


def si(value, unit: str) -> str:
    """3 significant digits with an SI prefix, e.g. 4.26 ms; '-' when missing."""
    if value is None:
        return "-"
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def short(value) -> str:
    """3 significant digits, no unit; '-' when missing."""
    return "-" if value is None else f"{value:.3g}"


def sig(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits in plain notation with thousands separators: 1375 -> '1,380',
    64.47 -> '64.5', 0.501 -> '0.501'."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    places = digits - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, places)
    if rounded and math.floor(math.log10(abs(rounded))) != math.floor(math.log10(abs(value))):
        places -= 1  # 999.6 rounds up to 1,000: one place fewer keeps three digits
        rounded = round(value, places)
    return f"{rounded:,.{max(places, 0)}f}"


def times(value) -> str:
    """A ratio as a factor, e.g. '1,380×', '3.02×'; '-' when missing."""
    return "-" if value is None else f"{sig(value)}×"


def pct(share, digits: int = 0) -> str:
    """A share as a percentage, e.g. '118 %' (``digits`` after the point: '98.1 %'); '-' when missing."""
    return "-" if share is None else f"{share * 100:.{digits}f} %"


def count(value) -> str:
    """A whole number with thousands separators, e.g. '131,072'; '-' when missing."""
    return "-" if value is None else f"{round(value):,}"


def span(values: Iterable[float], show: Callable[[float], str], suffix: str = "") -> str:
    """The range of ``values``, each end as ``show`` writes it and once when both ends read alike, then ``suffix``:
    '0.968–3.27×', '62–71 %', '28.8 ms–36.1 ms', '1.26×'."""
    values = list(values)
    low, high = show(min(values)), show(max(values))
    return (low if low == high else f"{low}–{high}") + suffix


def n_range(low, high) -> str:
    """'16,384–131,072' (one value when both ends agree)."""
    return span([low, high], count)
