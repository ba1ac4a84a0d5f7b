"""The steps and outliers in each point's trend.

Steps: PELT change-point detection (the ``ruptures`` library) on the log of the per-commit medians, with a BIC-like
penalty scaled by the noise between consecutive commits, then a step is kept only when the bootstrap interval of
its size (the ratio of the segment medians after and before) lies wholly beyond ``margin``: a drift of five 4 %
steps is five steps a single A/B gate passes one at a time.

Outliers: one commit off the trend by more than the noise margin while its neighbours on both sides agree with
each other (a one-commit excursion: a noisy run, or a change undone by the next commit). It is listed with its
ratio, apart from the steps, and left out of the step detection, so a 1.9x spike is neither a step nor hidden.

A commit without a value (None: it failed to import, or the point failed its correctness check) is a gap: the
trend is read over the commits that have one, and indices stay those of the full history.
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
#: an outlier lies this many robust SDs of the values' distances from their neighbours' mean (or the margin, if
#: larger) off its neighbours' level: noise alone reaches z = 5 once in 1.7 million values (the SD's own estimate
#: from 24 commits errs by about 15 %, so in practice about once in 10,000)
OUTLIER_SIGMAS = 5.0


def series(filed: list[dict], normalize: bool = False) -> dict[str, dict]:
    """Per point label: commits, medians and p20/p80 in history order (memory-bound points, those whose data
    outgrow the last-level cache, scaled to the first run's bandwidth with ``normalize``), and ``reasons``: None
    for a measured commit, else why it has no value (a point filed with another status, or a commit filed as
    failed: a gap in every series of its folder). A commit filed more than once counts once: the run with its
    lowest median, the one least disturbed by other work on the machine (timeit's rule for repeats)."""
    reference = next((e["copy_bytes_per_s"] for e in filed if e.get("copy_bytes_per_s")), None)
    labels = list(dict.fromkeys(p["label"] for e in filed for p in e.get("points", [])))
    # whether a point outgrows the cache is the point's, on one machine: an entry filed before the cache size was
    # recorded takes it from one that has it (else every linear point counts as memory-bound)
    bound_of = {p["label"]: p["memory_bound"] for e in filed for p in e.get("points", []) if "memory_bound" in p}
    found: dict[str, dict] = {}
    for entry in filed:
        scale = 1.0
        if normalize and reference and entry.get("copy_bytes_per_s"):
            scale = entry["copy_bytes_per_s"] / reference
        points = entry.get("points", [])
        if entry.get("status", "ok") != "ok" and not points:
            points = [{"label": label, "status": entry["status"], "reason": entry.get("reason")} for label in labels]
        for point in points:
            bound = bound_of.get(point["label"], point.get("complexity") == "linear")
            factor = scale if bound else 1.0
            line = found.setdefault(point["label"], {"commits": [], "median": [], "p20": [], "p80": [],
                                                     "reasons": [], "unit": point.get("unit", "s")})
            ok = point.get("status", "ok") == "ok"
            values = {name: None if not ok or point.get(name) is None else point[name] * factor
                      for name in ("median", "p20", "p80")}
            reason = None if ok else f"{point.get('status')}: {point.get('reason') or 'no reason'}"
            if line["commits"] and line["commits"][-1] == entry["commit"]:
                kept = line["median"][-1]
                if values["median"] is None or (kept is not None and kept <= values["median"]):
                    continue  # the same commit again: its better run stays
                for name in ("median", "p20", "p80", "reasons"):
                    line[name].pop()
                line["commits"].pop()
            line["commits"].append(entry["commit"])
            line["reasons"].append(reason)
            for name, value in values.items():
                line[name].append(value)
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


@dataclass
class Outlier:
    at: int  # index of the commit
    commit: str
    ratio: float  # its value / its neighbours' level (geometric mean)
    threshold: float  # the ratio beyond which it counts, either way (the noise margin)

    def as_dict(self) -> dict:
        return {"at": self.at, "commit": self.commit, "ratio": self.ratio, "threshold": self.threshold}


def _noise(logs: np.ndarray) -> float:
    """The commit-to-commit noise (standard deviation) of a series, robust to its steps: MAD of differences."""
    diffs = np.diff(logs)
    if len(diffs) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def _measured(values: list[float | None], commits: list[str]) -> tuple[list[int], np.ndarray]:
    """The indices of the commits with a value, and the logs of those values."""
    if len(values) != len(commits):
        raise ValueError("a history needs one value per commit.")
    kept = [i for i, v in enumerate(values) if v is not None and math.isfinite(v) and v > 0]
    return kept, np.log(np.asarray([values[i] for i in kept], dtype=float))


def _outliers(logs: np.ndarray, margin: float) -> tuple[list[int], float]:
    """Positions in ``logs`` of one-value excursions, and the log threshold they exceed."""
    if len(logs) < 3:
        return [], math.log1p(margin)
    # each value's distance from its neighbours' mean, and the spread of those distances (MAD: robust to the
    # excursions it looks for, and to a step, which moves two of them)
    off = logs[1:-1] - (logs[:-2] + logs[2:]) / 2
    spread = 1.4826 * float(np.median(np.abs(off - np.median(off))))
    limit = max(math.log1p(margin), OUTLIER_SIGMAS * spread)
    found = []
    for i in range(1, len(logs) - 1):
        gap = abs(logs[i + 1] - logs[i - 1])
        # the neighbours agree with each other (no step between them) and this value is far off both
        if gap <= limit and abs(off[i - 1]) > max(limit, 2 * gap):
            found.append(i)
    return found, limit


def outliers(values: list[float | None], commits: list[str], margin: float = DEFAULT_MARGIN) -> list[Outlier]:
    """The one-commit excursions of one point's history (see the module's docstring)."""
    kept, logs = _measured(values, commits)
    found, limit = _outliers(logs, margin)
    return [Outlier(kept[i], commits[kept[i]], math.exp(logs[i] - (logs[i - 1] + logs[i + 1]) / 2),
                    math.exp(limit)) for i in found]


def steps(values: list[float | None], commits: list[str], margin: float = DEFAULT_MARGIN) -> list[Step]:
    """The steps of one point's history (see the module's docstring); at least 2 commits on each side, outliers
    and gaps left out."""
    import ruptures

    kept, logs = _measured(values, commits)
    spikes = set(_outliers(logs, margin)[0])
    kept = [k for i, k in enumerate(kept) if i not in spikes]
    logs = np.delete(logs, np.array(sorted(spikes), dtype=int))
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
            found.append(Step(kept[at], commits[kept[at]], ratio, low, high))
    return found
