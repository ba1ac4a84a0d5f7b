"""Number formatting shared by the figures and REPORT.md (its own module: markdown reads the figure spec)."""

from __future__ import annotations

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
