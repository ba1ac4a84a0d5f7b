"""Measures the gate's own error rates on this machine: repeated A/B gates of unchanged code (false alarms)
and of a deliberately slowed candidate (misses), plus instruction-count gates (1 % more work by default, at the
gate's own 1 % threshold; unchanged). From the repository root, with fastformer_bench installed (or on PYTHONPATH):

    python scripts/gate_selftest.py --repeats 20 --out results/gate-selftest

The candidate tree is a temporary clone of this working tree (uncommitted changes included, committed there),
so the baseline revision ("HEAD" of the clone) is exactly the candidate's code. The slowed candidates are the
plugins ``test_slowdown`` (and ``_2``, ``_3`` for more factors; fastformer_bench/tools/slowed_impls.py), each
paired with ``eager`` in the same gate: one gate run gives one unchanged trial (the eager/eager and
softmax/softmax points) and one slowed trial per factor.

    python scripts/gate_selftest.py --repeats 20 --factor 1.00,1.05,1.10,1.25 --out results/gate-selftest

A factor of exactly 1 is harmless different code: eager called through the plugin wrapper, so its process
allocates and lays out memory unlike the baseline's. Identical code on both sides cancels the layout's effect
within each round; a real change does not, so those rows count as false alarms too ("false_alarms_wrapped").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from fastformer_bench.gate.instructions import DEFAULT_CALLS
from fastformer_bench.tools.gate_selftest import follow_up_rounds, plugin_env, score, snapshot, summary
from fastformer_bench.tools.slowed_impls import SLOWDOWN_ATTRIBUTES, calls_for_exact_work, slowdown_name

#: the repository this file belongs to: the snapshot's source and the gate's working folder
REPO = Path(__file__).resolve().parents[1]


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
            "command": " ".join([sys.executable, str(Path(__file__).resolve().relative_to(REPO)),
                                 *(argv or sys.argv[1:])]),
            "complete": len(wall) == args.repeats and len(instr) == args.instruction_repeats,
            "wall": {"summary": summary(wall), "trials": wall},
            "instructions": {"summary": summary(instr), "trials": instr},
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
    walls, instrs = final["wall"]["summary"], final["instructions"]["summary"]
    wall_ok = walls["false_alarms"] == walls["false_alarms_wrapped"] == 0 and walls["caught"] == len(wall)
    instr_ok = instrs["false_alarms"] == 0 and instrs["caught"] == len(instr)
    return 0 if wall_ok and instr_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
