"""The gate's self-test, what scripts/gate_selftest.py runs and the gate's tests use: a snapshot of a working tree
to gate against itself, the environment that plugs the slowed candidates (slowed_impls.py) into every process of
a gate, and the scoring of a gate's JSON rows as false alarms and caught slowdowns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from fastformer_bench.tools.slowed_impls import SLOWDOWN_ATTRIBUTES, SLOWDOWN_ENV, slowdown_factor

#: FASTFORMER_BENCH_PLUGINS for the slowed candidates: every test_slowdown and test_extra
PLUGINS = ",".join(f"fastformer_bench.tools.slowed_impls:{name}" for name in (*SLOWDOWN_ATTRIBUTES, "EXTRA"))


def snapshot(source: Path, dest: Path) -> Path:
    """A git clone of ``source`` whose HEAD holds ``source``'s working tree as it is now (tracked + untracked)."""
    git = ["git", "-c", "user.name=gate-selftest", "-c", "user.email=gate@selftest", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "clone", "--quiet", "--shared", str(source), str(dest)], check=True)
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = source / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run([*git, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(dest), "commit", "--quiet", "--allow-empty", "-m", "gate self-test snapshot"],
                   check=True)
    return dest


def plugin_env(factor: str) -> dict[str, str]:
    """The environment that registers the slowed candidates, slowed by ``factor``, in every process of a gate."""
    return dict(os.environ, FASTFORMER_BENCH_PLUGINS=PLUGINS, **{SLOWDOWN_ENV: factor})


def rows(result: dict, impl: str | None) -> list[dict]:
    """The rows of the slowed ``impl`` (its label ends "vs <impl>"), or the unchanged rows (``impl`` None)."""
    found = result.get("rows", [])
    if impl is None:
        return [r for r in found if " vs " not in r["label"]]
    return [r for r in found if r["label"].endswith(f" vs {impl}")]


def score(result: dict, slowed: dict[str, str]) -> dict:
    """One gate's verdicts. ``slowed`` maps factor text -> the implementation slowed by it: a factor above 1 is
    caught if every row of its implementation is a regression (and it has rows); a factor of 1 is a false alarm
    ("false_alarm_wrapped") if any of its rows fails, as is any row of identical code ("false_alarm")."""
    caught, wrapped, labels = {}, False, []
    for text, impl in slowed.items():
        found = rows(result, impl)
        if slowdown_factor(text) == 1:
            wrapped = wrapped or any(r["fails"] for r in found)
            labels += [r["label"] for r in found]
        else:
            caught[text] = bool(found) and all(r["verdict"] == "regression" for r in found)
    return {"false_alarm": any(r["fails"] for r in rows(result, None)), "false_alarm_wrapped": wrapped,
            "caught": all(caught.values()), "caught_by_factor": caught, "wrapped_labels": labels}


def follow_up_rounds(found: list[dict]) -> dict[str, int]:
    """The rows measured in more paired rounds than the gate's fewest (its follow-up rounds), with how many more."""
    counts = {r["label"]: len(r["round_ratios"]) for r in found if r.get("round_ratios")}
    fewest = min(counts.values(), default=0)
    return {label: n - fewest for label, n in counts.items() if n > fewest}


def summary(trials: list[dict]) -> dict:
    """What a series of scored gates (``score``'s verdicts with the gate's rows and wall time) add up to."""
    walls = sorted(t["wall_s"] for t in trials)
    # Time rows: the slowdown each point's noise let the gate flag (about half the time), over every row of every
    # trial: why a factor was or was not caught on this machine at this time.
    flagged = sorted(r["flagged_from"] for t in trials for r in t.get("rows") or () if r.get("flagged_from"))
    # Paired rounds, every row: how far one pair of processes moves the ratio on its own (the SD of the rounds'
    # log ratios, in %), per point over every trial: the noise a slowdown must stand out from. Identical code
    # cancels the memory layout within a round; the wrapper (factor 1) and the slowed rows show what is left.
    # Pooled over trials: the squared deviations from each trial's own mean over its degrees of freedom.
    spread: dict[str, list] = {}
    for trial in trials:
        for row in trial.get("rows") or ():
            logs = np.log(row.get("round_ratios") or [1.0])
            if len(logs) > 1:
                found = spread.setdefault(row["label"], [0.0, 0])
                found[0] += float(np.sum(np.square(logs - logs.mean())))
                found[1] += len(logs) - 1
    by_factor: dict[str, int] = {}
    for trial in trials:
        for text, caught in trial.get("caught_by_factor", {}).items():
            by_factor[text] = by_factor.get(text, 0) + caught
    return {"trials": len(trials), "false_alarms": sum(t["false_alarm"] for t in trials),
            "false_alarms_wrapped": sum(t.get("false_alarm_wrapped", False) for t in trials),
            "caught": sum(t["caught"] for t in trials), "caught_by_factor": by_factor,
            "wall_s_median": walls[len(walls) // 2] if walls else None, "wall_s_max": walls[-1] if walls else None,
            "trials_followed_up": sum(bool(t.get("follow_up_rounds")) for t in trials),
            "flagged_from_median": flagged[len(flagged) // 2] if flagged else None,
            "round_sd_percent": {label: round(100 * float(np.sqrt(squares / freedom)), 2)
                                 for label, (squares, freedom) in spread.items()}}
