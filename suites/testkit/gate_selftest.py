"""Measures the gate's own error rates on this machine: repeated A/B gates of unchanged code (false alarms)
and of a deliberately slowed candidate (misses), plus instruction-count gates (1 % more work by default, at the
gate's own 1 % threshold; unchanged).

    python suites/testkit/gate_selftest.py --repeats 20 --out results/gate-selftest

The candidate tree is a temporary clone of this working tree (uncommitted changes included, committed there),
so the baseline revision ("HEAD" of the clone) is exactly the candidate's code. The slowed candidates are the
test plugins ``test_slowdown`` (and ``_2``, ``_3`` for more factors; suites/testkit/plugin_faulty_impls.py), each
paired with ``eager`` in the same gate: one gate run gives one unchanged trial (the eager/eager and
softmax/softmax points) and one slowed trial per factor.

    python suites/testkit/gate_selftest.py --repeats 20 --factor 1.00,1.05,1.10,1.25 --out results/gate-selftest

A factor of exactly 1 is harmless different code: eager called through the plugin wrapper, so its process
allocates and lays out memory unlike the baseline's. Identical code on both sides cancels the layout's effect
within each round; a real change does not, so those rows count as false alarms too ("false_alarms_wrapped").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from testkit.plugin_faulty_impls import (
    SLOWDOWN_ATTRIBUTES,
    SLOWDOWN_ENV,
    calls_for_exact_work,
    slowdown_factor,
    slowdown_name,
)

from fastformer_bench.gate.instructions import DEFAULT_CALLS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]  # the repository this file belongs to: the snapshot's source and the gate's working folder
PLUGINS = ",".join(f"testkit.plugin_faulty_impls:{name}" for name in (*SLOWDOWN_ATTRIBUTES, "EXTRA"))


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
    """The environment that registers the slowed test implementations in every process of a gate."""
    env = dict(os.environ, FASTFORMER_BENCH_PLUGINS=PLUGINS, **{SLOWDOWN_ENV: factor})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH", "")]))
    return env


def run_gate(repo: Path, args: list[str], env: dict[str, str], workdir: Path) -> dict:
    """One `fastformer-bench gate` against the clone's HEAD; its exit code, wall time and JSON rows."""
    report = workdir / "gate.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "fastformer_bench", "gate", "--repo", str(repo), "--baseline-rev", "HEAD",
               "--json", str(report), *args]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    result = {"exit": done.returncode, "wall_s": time.monotonic() - started}
    if report.exists():
        result["rows"] = json.loads(report.read_text())["rows"]
    else:
        result["stderr"] = done.stderr[-2000:]
    return result


def _rows(result: dict, impl: str | None) -> list[dict]:
    """The rows of the slowed ``impl`` (its label ends "vs <impl>"), or the unchanged rows (``impl`` None)."""
    rows = result.get("rows", [])
    if impl is None:
        return [r for r in rows if " vs " not in r["label"]]
    return [r for r in rows if r["label"].endswith(f" vs {impl}")]


def _is_unchanged(text: str) -> bool:
    return slowdown_factor(text) == 1


def score(result: dict, slowed: dict[str, str]) -> dict:
    """One gate's verdicts. ``slowed`` maps factor text -> the implementation slowed by it: a factor above 1 is
    caught if every row of its implementation is a regression (and it has rows); a factor of 1 is a false alarm
    ("false_alarm_wrapped") if any of its rows fails, as is any row of identical code ("false_alarm")."""
    caught, wrapped, labels = {}, False, []
    for text, impl in slowed.items():
        rows = _rows(result, impl)
        if _is_unchanged(text):
            wrapped = wrapped or any(r["fails"] for r in rows)
            labels += [r["label"] for r in rows]
        else:
            caught[text] = bool(rows) and all(r["verdict"] == "regression" for r in rows)
    return {"false_alarm": any(r["fails"] for r in _rows(result, None)), "false_alarm_wrapped": wrapped,
            "caught": all(caught.values()), "caught_by_factor": caught, "wrapped_labels": labels}


def follow_up_rounds(rows: list[dict]) -> dict[str, int]:
    """The rows measured in more paired rounds than the gate's fewest (its follow-up rounds), with how many more."""
    counts = {r["label"]: len(r["round_ratios"]) for r in rows if r.get("round_ratios")}
    fewest = min(counts.values(), default=0)
    return {label: n - fewest for label, n in counts.items() if n > fewest}


def _trials(repo: Path, repeats: int, workdir: Path, args: list[str], factor: str, slowed: dict[str, str],
            kind: str, trials: list[dict] | None = None, saved=None) -> list[dict]:
    """``repeats`` gates of ``args``, each scored by ``score``. ``factor`` is what the plugins read
    (SLOWDOWN_ENV). Each trial is appended to ``trials`` and ``saved()`` called, so a run cut short keeps the
    trials it finished."""
    trials = [] if trials is None else trials
    for number in range(repeats):
        result = run_gate(repo, args, plugin_env(factor), workdir)
        verdicts = score(result, slowed)
        caught = verdicts["caught_by_factor"]
        trial = {"n": number, "wall_s": result["wall_s"], "exit": result["exit"], **verdicts,
                 "follow_up_rounds": follow_up_rounds(result.get("rows") or []),
                 "rows": result.get("rows"), "stderr": result.get("stderr")}
        trials.append(trial)
        if saved:
            saved()
        print(f"{kind} trial {number}: false alarm {trial['false_alarm']} (different code: "
              f"{trial['false_alarm_wrapped']}), caught {caught}, "
              f"{trial['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return trials


def wall_trials(repo: Path, repeats: int, workdir: Path, extra: list[str], factor: str = "1.25",
                trials: list[dict] | None = None, saved=None) -> list[dict]:
    """Default A/B gates, each with the preset's points unchanged plus eager against one slowed copy of eager
    per factor of ``factor`` ("1.25", or "1.00,1.05,1.10,1.25": every factor in the same gate, beside the same
    unchanged points; 1.00 is the wrapper at eager's own speed)."""
    factors = factor.split(",")
    slowed = {text: slowdown_name(index) for index, text in enumerate(factors)}
    args = ["--impl", ",".join(["eager", "softmax_sdpa", *["eager"] * len(factors)]),
            "--candidate-impl", ",".join(["eager", "softmax_sdpa", *slowed.values()]), *extra]
    return _trials(repo, repeats, workdir, args, factor, slowed, "wall", trials, saved)


def instruction_trials(repo: Path, repeats: int, workdir: Path, factor: str = "1.01", threshold: str = "1",
                       trials: list[dict] | None = None, saved=None) -> list[dict]:
    """Instruction gates (forward: test_extra adds forward work only): eager vs test_extra at ``factor`` x the
    work, flagged above ``threshold`` %. Measured at 1.01 (100 calls, 3 layouts): ratios 1.0130-1.0138, each
    layout 1.0120-1.0150 (the extra call's own Python overhead comes on top of its work), unchanged points within
    0.3 % of 1 per layout.

    test_extra adds whole eager calls (one per denominator of the factor), so each counted region holds a
    multiple of the denominator of calls, at least the gate's default 50: 100 at 1.01, where 50 calls would hold
    no extra work at all."""
    calls = calls_for_exact_work(factor, DEFAULT_CALLS)
    args = ["--instructions", "--mode", "fwd", "--impl", "eager,softmax_sdpa,eager", "--candidate-impl",
            "eager,softmax_sdpa,test_extra", "--instr-threshold", threshold, "--calls", str(calls)]
    return _trials(repo, repeats, workdir, args, factor, {factor: "test_extra"}, "instruction", trials, saved)


def _summary(trials: list[dict]) -> dict:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="A/B wall-time gates (default 20)")
    parser.add_argument("--instruction-repeats", type=int, default=5, help="instruction gates (default 5)")
    parser.add_argument("--out", default="results/gate-selftest", help="where the JSON results go")
    parser.add_argument("--gate-args", default="", help="extra gate options for the wall-time trials")
    parser.add_argument("--factor", default="1.25",
                        help="the slowed candidates' wall-time factors, comma-separated, at most 4, measured in the "
                             "same gates (default 1.25); 1.00 adds eager through the wrapper at its own speed, "
                             "whose rows count as false alarms")
    parser.add_argument("--instruction-factor", default="1.01",
                        help="the instruction candidate's work factor (default 1.01); each counted region holds a "
                             "multiple of its denominator of calls, at least 50 (100 at 1.01)")
    parser.add_argument("--instruction-threshold", default="1",
                        help="the instruction trials' gate threshold, percent (default 1, the gate's own)")
    parser.add_argument("--repo", help="use this git clone as the candidate (its HEAD is the baseline) instead of "
                                       "a fresh snapshot of this working tree")
    args = parser.parse_args(argv)
    if len(args.factor.split(",")) > len(SLOWDOWN_ATTRIBUTES):
        parser.error(f"--factor names at most {len(SLOWDOWN_ATTRIBUTES)} factors, got {args.factor!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The file is written after every trial (and named at the start), so a run cut short keeps what it measured.
    target = out / f"selftest-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    wall: list[dict] = []
    instr: list[dict] = []
    load_before = os.getloadavg()

    def payload() -> dict:
        return {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "command": " ".join([sys.executable, str(HERE.relative_to(REPO) / Path(__file__).name),
                                 *(argv or sys.argv[1:])]),
            "complete": len(wall) == args.repeats and len(instr) == args.instruction_repeats,
            "wall": {"summary": _summary(wall), "trials": wall},
            "instructions": {"summary": _summary(instr), "trials": instr},
        }

    def saved() -> None:
        target.write_text(json.dumps(payload(), indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="ffb-selftest-") as tmp:
        repo = Path(args.repo).resolve() if args.repo else snapshot(REPO, Path(tmp) / "clone")
        wall_trials(repo, args.repeats, Path(tmp), args.gate_args.split(), args.factor, wall, saved)
        instruction_trials(repo, args.instruction_repeats, Path(tmp), args.instruction_factor,
                           args.instruction_threshold, instr, saved)
    saved()
    final = payload()
    print(json.dumps({"wall": final["wall"]["summary"], "instructions": final["instructions"]["summary"]}))
    summary = final["wall"]["summary"]
    wall_ok = summary["false_alarms"] == summary["false_alarms_wrapped"] == 0 and summary["caught"] == len(wall)
    instr_ok = (final["instructions"]["summary"]["false_alarms"] == 0
                and final["instructions"]["summary"]["caught"] == len(instr))
    return 0 if wall_ok and instr_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
