"""Performance history across commits: filed runs per machine, and the steps in each point's trend.

``add`` files one results directory under ``HISTORY/<machine fingerprint>/`` as one JSON entry (commit, commit
time, copy bandwidth, and each ok point's median with its p20-p80 band, or its instruction count). ``steps``
finds where a point's trend moved: PELT change-point detection (the ``ruptures`` library) on the log of the
per-commit medians, with a BIC-like penalty scaled by the noise between consecutive commits, then a step is
kept only when the bootstrap interval of its size (the ratio of the segment medians after and before) lies
wholly beyond ``margin``: a drift of five 4 % steps is five steps a single A/B gate passes one at a time.
Pure Python + numpy/pandas (no torch): ``history show`` reads only JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fastformer_bench.gate.compare import point_key, point_label
from fastformer_bench.gate.stored import FINGERPRINT, fingerprint, load

#: a step smaller than this (as a ratio) is not reported, whatever its significance
DEFAULT_MARGIN = 0.02
#: penalty = PENALTY_SCALE * noise variance * log(commits): a BIC-like cost of one more segment
PENALTY_SCALE = 3.0
BOOTSTRAP, SEED = 2000, 20261129


def machine_key(found: dict) -> str:
    """A folder name for a fingerprint: readable where it can be, unique by a hash."""
    words = "-".join(str(found.get(k) or "") for k in ("device", "cpu_model", "gpu_name", "threads"))
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", words).strip("-")[:60]
    digest = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def _commit_time(repo: Path, commit: str) -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%cI", commit], capture_output=True,
                          text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


def add(results: str | Path, history: str | Path, *, commit: str | None = None, repo: str | Path = ".") -> Path:
    """File ``results`` (a results directory) in ``history``; the entry's path. ValueError for bad input."""
    run, records = load(results)  # ValueError (exit 2) for a directory without results
    commit = commit or run.get("git_commit")
    if not commit:
        raise ValueError(f"{results} does not say which commit it measured (run.json has no git_commit); "
                         "give --commit.")
    found = fingerprint(run, records)
    points = []
    for record in records:
        if record.get("status") != "ok" or record.get("time_median") is None:
            continue  # correctness first: only timed, correct points enter a trend
        points.append({"key": list(point_key(record)), "label": point_label(record),
                       "complexity": record.get("complexity"), "median": record["time_median"],
                       "p20": record.get("time_p20"), "p80": record.get("time_p80")})
    if not points:
        raise ValueError(f"{results} holds no timed, correct point to file.")
    bandwidth = run.get("copy_bytes_per_s")
    if isinstance(bandwidth, dict):
        bandwidth = bandwidth.get("cpu") or next(iter(bandwidth.values()), None)
    entry = {"commit": commit, "commit_time": _commit_time(Path(repo), commit), "run_id": run.get("run_id"),
             "added": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "fingerprint": found,
             "copy_bytes_per_s": bandwidth, "points": points}
    folder = Path(history) / machine_key(found)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (entry["commit_time"] or entry["added"]).replace(":", "").replace("-", "")[:15]
    path = folder / f"{stamp}-{commit[:12]}-{run.get('run_id') or 'run'}.json"
    path.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    return path


def entries(history: str | Path) -> dict[str, list[dict]]:
    """Every filed entry, per machine folder, in commit-time order (then filing time)."""
    root = Path(history)
    if not root.is_dir():
        raise ValueError(f"no history at {history}: file a run first with `fastformer-bench history add`.")
    found: dict[str, list[dict]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        loaded = []
        for path in sorted(folder.glob("*.json")):
            try:
                loaded.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"cannot read history entry {path}: {exc}.") from None
        if loaded:
            found[folder.name] = sorted(loaded, key=lambda e: (e.get("commit_time") or "", e.get("added") or ""))
    if not found:
        raise ValueError(f"the history at {history} holds no entries.")
    return found


def check_one_machine(filed: list[dict], normalize: bool) -> None:
    """Entries of one folder must share a fingerprint; their bandwidths may differ only with ``normalize``."""
    prints = {json.dumps({k: e["fingerprint"].get(k) for k in FINGERPRINT}, sort_keys=True) for e in filed}
    if len(prints) > 1:
        raise ValueError("one history folder holds runs of different machines; file each machine's runs apart.")
    bandwidths = [e.get("copy_bytes_per_s") for e in filed if e.get("copy_bytes_per_s")]
    if not normalize and bandwidths and max(bandwidths) / min(bandwidths) > 1.15:
        raise ValueError(f"the runs' copy bandwidths differ up to {max(bandwidths) / min(bandwidths):.2f}x; "
                         "pass --normalize to scale memory-bound points by it, or file runs of one machine state.")


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
            line = found.setdefault(point["label"], {"commits": [], "median": [], "p20": [], "p80": []})
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
