"""The one range check of numeric settings, for the speed sweep's Settings and the probe's ProbeSettings alike."""

from __future__ import annotations

import math
from typing import NamedTuple


class Range(NamedTuple):
    """A numeric setting's type, the lowest value allowed, whether that value itself is allowed, and None."""

    kind: type
    lowest: float
    inclusive: bool = True
    optional: bool = False


def check_ranges(settings: object, ranges: dict[str, Range]) -> None:
    """ValueError with one sentence for the first of ``settings``' attributes outside its range."""
    for name, (kind, lowest, inclusive, optional) in ranges.items():
        value = getattr(settings, name)
        if value is None and optional:
            continue
        wanted = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not math.isfinite(value):
            raise ValueError(f"setting {name} must be {'an integer' if kind is int else 'a number'}"
                             f"{' or none' if optional else ''}, got {value!r}.")
        if value < lowest or (value == lowest and not inclusive):
            bound = f">= {lowest:g}" if inclusive else f"> {lowest:g}"
            raise ValueError(f"setting {name} must be {bound}, got {value!r}.")
