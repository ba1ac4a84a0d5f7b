"""The steps in each point's trend: PELT change-point detection (the ``ruptures`` library) on the log of the
per-commit medians, with a BIC-like penalty scaled by the noise between consecutive commits, then a step is
kept only when the bootstrap interval of its size (the ratio of the segment medians after and before) lies
wholly beyond ``margin``: a drift of five 4 % steps is five steps a single A/B gate passes one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: a step smaller than this (as a ratio) is not reported, whatever its significance
DEFAULT_MARGIN = 0.02
#: penalty = PENALTY_SCALE * noise variance * log(commits): a BIC-like cost of one more segment
PENALTY_SCALE = 3.0
BOOTSTRAP, SEED = 2000, 20261129


def series(filed: list[dict], normalize: bool = False) -> dict[str, dict]:
    """Per point label: commits, medians and p20/p80 in history order (memory-bound points scaled to the first
    run's bandwidth with ``normalize``)."""
    reference = next((e["copy_bytes_per_s"] for e in filed if e.get("copy_bytes_per_s")), None)
    found: dict[str, dict] = {}
    for entry in filed:
        scale = 1.0
        if normalize and reference and entry.get("copy_bytes_per_s"):
            scale = entry["copy_bytes_per_s"] / reference
        for point in entry["points"]:
            factor = scale if point.get("complexity") == "linear" else 1.0
            line = found.setdefault(point["label"], {"commits": [], "median": [], "p20": [], "p80": [],
                                                     "unit": point.get("unit", "s")})
            line["commits"].append(entry["commit"])
            for name in ("median", "p20", "p80"):
                value = point.get(name)
                line[name].append(None if value is None else value * factor)
    return found


@dataclass
class Step:
    at: int  # index of the first commit after the step
    commit: str
    ratio: float  # median after / median before
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return {"at": self.at, "commit": self.commit, "ratio": self.ratio, "ci_low": self.ci_low,
                "ci_high": self.ci_high}


def _noise(logs: np.ndarray) -> float:
    """The commit-to-commit noise (standard deviation) of a series, robust to its steps: MAD of differences."""
    diffs = np.diff(logs)
    if len(diffs) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def steps(values: list[float], commits: list[str], margin: float = DEFAULT_MARGIN) -> list[Step]:
    """The steps of one point's history (see the module's docstring); at least 2 commits on each side."""
    import ruptures

    if len(values) != len(commits):
        raise ValueError("a history needs one value per commit.")
    logs = np.log(np.asarray(values, dtype=float))
    n = len(logs)
    if n < 4:
        return []
    sigma = max(_noise(logs), 1e-4)  # a perfectly flat series still costs a step something
    breaks = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(logs.reshape(-1, 1)).predict(
        pen=PENALTY_SCALE * sigma**2 * math.log(n))
    bounds = [0, *breaks]
    rng = np.random.default_rng(SEED)
    found = []
    for start, at, end in zip(bounds, bounds[1:], bounds[2:]):
        before, after = logs[start:at], logs[at:end]
        ratio = math.exp(np.median(after) - np.median(before))
        resampled = (np.median(rng.choice(after, (BOOTSTRAP, len(after))), axis=1)
                     - np.median(rng.choice(before, (BOOTSTRAP, len(before))), axis=1))
        low, high = (math.exp(v) for v in np.percentile(resampled, [2.5, 97.5]))
        if low > 1 + margin or high < 1 / (1 + margin):
            found.append(Step(at, commits[at], ratio, low, high))
    return found
