"""Does the `plain` figure the suite stores agree with a plain script timing the same call? (issue 32)
With ``--condition``, does a stored remedy's figure hold for the one-line setting the report tells a user to type?

For each ok CPU forward point that a results folder holds under the `plain` allocator condition, fresh Python
processes time the call the way a user's script would, independently of the harness's timer: an environment
without any allocator setting (MALLOC_*, GLIBC_TUNABLES, LD_PRELOAD, THP_MEM_ALLOC_ENABLE, JEMALLOC_*,
TCMALLOC_*), pinned to the CPUs the point was timed on, torch at the point's thread count, inputs from
torch.randn, ``fastformer_bench.additive_attention(x, w, None, impl=...)`` called twice untimed, then timed
``--calls`` times with time.perf_counter. Each point in ``--processes`` processes; the script's figure is the
median over all their calls.

``--condition warm|thp|jemalloc|tcmalloc`` checks the points stored under that condition instead, timed in
processes whose environment is the plain one plus the condition's setting as the report's remedy spells it
(axes.REMEDY_ENV: e.g. warm's three MALLOC_* variables rather than the harness's mallopt calls, tcmalloc's
``LD_PRELOAD`` of a bare soname). Points that name no condition (measured warm) are not checked.

    python scripts/plain_check.py results/cpu --json results/cpu/plain-check.json
    python scripts/plain_check.py results/cpu --condition warm --json results/cpu/warm-env-check.json

``--remeasure`` tells the host's drift from the method: just before a point's script processes, the harness
measures that one point again (``fastformer-bench run`` on a one-point preset with the stored run's settings, in
a temporary folder), so harness and script time the same call minutes apart rather than the run's length apart.

Prints one line per point (stored median, the script's median, their ratio; with ``--remeasure`` also the
harness's new median and its ratio to the script) and the largest distance from 1; exits 1 where a stored /
script ratio lies outside 1 ± ``--tolerance`` (0.15, the issue's bound).

``--remeasure --rounds R`` (R >= 3) decides the method question on a host whose speed drifts within seconds, where
one harness figure against one batch of script calls is a coin toss (docs/measuring.md §6). Each point gets R rounds
of one harness measurement and one script process side by side, in alternating order; the harness / script ratio is
the gate's paired-rounds estimate (gate/stats.measure_rounds: geometric mean of the rounds' ratios of medians,
Student's t interval on their logarithms, the start order a term of its own where each order has two rounds), and
the verdict is "agrees" where the whole 95 % interval lies inside 1 ± tolerance, "differs" where it lies wholly
outside, "undecided" where it straddles a bound (the host's noise is wider than the check). Then the exit code is
the verdicts': 0 all agree, 1 any differs, 3 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fastformer_bench.axes import NAMES as AXIS_NAMES
from fastformer_bench.axes import REMEDY_ENV
from fastformer_bench.gate.stats import measure_rounds
from fastformer_bench.problem import Problem
from fastformer_bench.results import ResultsError, read_points, read_run

#: what a user's `python` does not have: every variable that changes the C library's or torch's allocator
_ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")
_ALLOCATOR_PREFIXES = ("MALLOC_", "JEMALLOC_", "TCMALLOC_")

_CHILD = """
import json, os, sys, time
os.sched_setaffinity(0, set(json.loads(sys.argv[1])))
import torch
import fastformer_bench as fb
torch.set_num_threads(int(sys.argv[2]))
C, B, N, D, H = map(int, sys.argv[3:8])
impl, calls = sys.argv[8], int(sys.argv[9])
x, w = torch.randn(C, B, N, D), torch.randn(C - 1, H, D // H)
for _ in range(2):
    fb.additive_attention(x, w, None, impl=impl)
times = []
for _ in range(calls):
    start = time.perf_counter()
    fb.additive_attention(x, w, None, impl=impl)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def plain_environment() -> dict[str, str]:
    """This process's environment less every allocator setting: what `python` gets in a fresh shell."""
    return {k: v for k, v in os.environ.items()
            if k not in _ALLOCATOR_VARIABLES and not k.startswith(_ALLOCATOR_PREFIXES)}


def condition_environment(condition: str) -> dict[str, str]:
    """The plain environment plus ``condition``'s own setting (none for plain)."""
    return {**plain_environment(), **REMEDY_ENV.get(condition, {})}


def plain_points(results: Path, condition: str = "plain") -> list[dict]:
    """The ok unmasked CPU core forward points measured under ``condition``, in the file's order."""
    points = []
    for record in read_points(results / "points.jsonl"):
        if (record.get("allocator") == condition and record.get("status") == "ok" and record.get("device") == "cpu"
                and record.get("mode") == "fwd" and record.get("scope") == "core"
                and record.get("family") == "additive" and not record.get("masked")):
            points.append(record)
    return points


def time_in_plain_process(record: dict, calls: int, condition: str = "plain") -> list[float]:
    cpus = record.get("cpu_affinity") or sorted(os.sched_getaffinity(0))[-int(record.get("threads") or 1):]
    args = [json.dumps(sorted(cpus)), str(record.get("threads") or 1), str(record["columns"]),
            str(record["batch"]), str(record["seq_len"]), str(record["width"]), str(record["heads"]),
            record["impl"], str(calls)]
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], env=condition_environment(condition),
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def point_axes(record: dict, settings: dict) -> dict:
    """The grid values that make ``record``'s very point (its point id): every axis the record names, less
    ``threads`` where its grid left that axis to the run's setting (a point id without it)."""
    axes = {name: record[name] for name in AXIS_NAMES if record.get(name) is not None}
    if Problem(**axes).point_id != record.get("point_id") and axes.get("threads") == settings.get("threads"):
        axes.pop("threads")
    return axes


def one_point_preset(record: dict, settings: dict) -> str:
    """A preset (TOML text) of the stored run's settings and one grid holding exactly ``record``'s point; no
    FLOP cross-check or energy reading (they do not change the time) and no revisits."""
    settings = {**settings, "count_flops": False, "measure_energy": False, "revisits": 0}
    lines = ['name = "plain-check-point"', 'description = "one stored point, measured again by plain_check"',
             "[settings]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(settings.items()) if value is not None]
    lines.append("[[grid]]")
    lines += [f"{axis} = [{json.dumps(value)}]" for axis, value in point_axes(record, settings).items()]
    return "\n".join(lines) + "\n"


def remeasure(record: dict, settings: dict) -> dict:
    """``record``'s point measured now by the harness in a fresh ``run`` (its new record: ``time_median``,
    ``samples``); raises RuntimeError where the point does not come back ok."""
    with tempfile.TemporaryDirectory(prefix="plain-check-") as folder:
        preset = Path(folder) / "point.toml"
        preset.write_text(one_point_preset(record, settings))
        out = Path(folder) / "results"
        done = subprocess.run([sys.executable, "-m", "fastformer_bench", "run", "--preset", str(preset), "--out",
                               str(out), "--no-progress"], capture_output=True, text=True, timeout=3600)
        records = read_points(out / "points.jsonl") if (out / "points.jsonl").exists() else []
        if done.returncode != 0 or len(records) != 1 or records[0].get("status") != "ok":
            why = records[0].get("reason") if len(records) == 1 else (done.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"the harness did not measure {record['impl']} N = {record['seq_len']} again: {why}")
        return records[0]


#: exit code of --rounds when no point differs but some could not be decided
UNDECIDED_EXIT = 3


def verdict(low: float | None, high: float | None, tolerance: float) -> str:
    """"agrees" where the interval [low, high] lies inside 1 ± tolerance, "differs" where it lies wholly outside,
    "undecided" where it straddles a bound (or is missing)."""
    if low is None or high is None:
        return "undecided"
    if 1 - tolerance <= low and high <= 1 + tolerance:
        return "agrees"
    if high < 1 - tolerance or low > 1 + tolerance:
        return "differs"
    return "undecided"


def paired_rounds(record: dict, settings: dict, rounds: int, calls: int, condition: str) -> dict:
    """``rounds`` rounds of one harness measurement and one script process, the harness first in even rounds:
    the harness / script ratio with its 95 % interval (gate/stats.measure_rounds) and every round's medians."""
    harness, script, harness_first = [], [], []
    for index in range(rounds):
        first = index % 2 == 0
        if not first:
            script.append(time_in_plain_process(record, calls, condition))
        again = remeasure(record, settings)
        harness.append(again.get("samples") or [again["time_median"]])
        if first:
            script.append(time_in_plain_process(record, calls, condition))
        harness_first.append(first)
    found = measure_rounds(script, harness, candidate_first=harness_first)
    return {"ratio": found.ratio, "ci_low": found.ci_low, "ci_high": found.ci_high, "harness_first": harness_first,
            "harness_medians_s": [statistics.median(h) for h in harness],
            "script_medians_s": [statistics.median(t) for t in script]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results folder (points.jsonl)")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per process")
    parser.add_argument("--processes", type=int, default=4, help="fresh processes per point")
    parser.add_argument("--condition", default="plain", choices=["plain", *REMEDY_ENV],
                        help="the allocator condition whose stored points to check (default plain)")
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure each point again with the harness just before its script processes")
    parser.add_argument("--rounds", type=int,
                        help="with --remeasure: R >= 3 paired rounds of harness and script per point, and a "
                             "verdict from the interval of their ratio (agrees / differs / undecided)")
    args = parser.parse_args(argv)
    if args.rounds is not None and (not args.remeasure or args.rounds < 3):
        print("--rounds takes --remeasure and at least 3 rounds (the interval needs two degrees of freedom).",
              file=sys.stderr)
        return 2
    if not (args.results / "points.jsonl").is_file():
        print(f"{args.results} holds no points.jsonl.", file=sys.stderr)
        return 2
    try:
        points = plain_points(args.results, args.condition)
    except ResultsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not points:
        print(f"{args.results} holds no ok {args.condition}-condition CPU forward point to check.",
              file=sys.stderr)
        return 2
    settings = {}
    if args.remeasure:
        try:
            settings = read_run(args.results).get("settings")
        except ResultsError:
            settings = None
        if not settings:
            print(f"{args.results} has no run.json with the run's settings, which --remeasure needs.",
                  file=sys.stderr)
            return 2
    rows = []
    for record in points:
        again = remeasure(record, settings)["time_median"] if args.remeasure and args.rounds is None else None
        times = [t for _ in range(args.processes) for t in time_in_plain_process(record, args.calls, args.condition)]
        script = statistics.median(times)
        row = {"impl": record["impl"], "seq_len": record["seq_len"], "width": record["width"],
               "batch": record["batch"], "threads": record.get("threads"), "stored_s": record["time_median"],
               "script_s": script, "script_min_s": min(times), "script_max_s": max(times),
               "ratio": record["time_median"] / script, "calls": len(times)}
        if again is not None:
            row.update(remeasured_s=again, remeasured_ratio=again / script)
        if args.rounds is not None:
            paired = paired_rounds(record, settings, args.rounds, args.calls, args.condition)
            row.update(paired=paired, verdict=verdict(paired["ci_low"], paired["ci_high"], args.tolerance))
        rows.append(row)
        print(f"{row['impl']:>9} N={row['seq_len']:>7} D={row['width']} B={row['batch']} threads={row['threads']}: "
              f"stored {row['stored_s'] * 1e3:8.2f} ms, script {script * 1e3:8.2f} ms "
              f"({min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}), stored / script {row['ratio']:.3f}"
              + (f"; measured again {again * 1e3:8.2f} ms, again / script {again / script:.3f}"
                 if again is not None else ""), flush=True)
        if args.rounds is not None:
            paired = row["paired"]
            interval = (f"{paired['ci_low']:.3f}-{paired['ci_high']:.3f}" if paired["ci_low"] is not None
                        else "no interval")
            each = ", ".join(f"{h / t:.2f}" for h, t in zip(paired["harness_medians_s"], paired["script_medians_s"]))
            print(f"{'':>9} {args.rounds} paired rounds: harness / script {paired['ratio']:.3f} (95 % interval "
                  f"{interval}; rounds {each}): {row['verdict']}", flush=True)
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
    print(f"largest distance from 1: {worst['ratio']:.3f} ({worst['impl']}, N = {worst['seq_len']})")
    if args.remeasure and args.rounds is None:
        again = max(rows, key=lambda r: abs(r["remeasured_ratio"] - 1))
        inside = sum(abs(r["remeasured_ratio"] - 1) <= args.tolerance for r in rows)
        print(f"measured again / script: {inside} of {len(rows)} within {args.tolerance:.0%}, largest distance "
              f"{again['remeasured_ratio']:.3f} ({again['impl']}, N = {again['seq_len']})")
    if args.json:
        args.json.write_text(json.dumps({"condition": args.condition,
                                         "environment": REMEDY_ENV.get(args.condition, {}),
                                         "tolerance": args.tolerance, "calls_per_process": args.calls,
                                         "processes": args.processes, "remeasured": args.remeasure,
                                         "rounds": args.rounds, "points": rows}, indent=1) + "\n")
    if args.rounds is not None:
        verdicts = [row["verdict"] for row in rows]
        print(f"paired rounds: {verdicts.count('agrees')} agree, {verdicts.count('differs')} differ, "
              f"{verdicts.count('undecided')} undecided (tolerance {args.tolerance:.0%})")
        return 1 if "differs" in verdicts else 0 if set(verdicts) == {"agrees"} else UNDECIDED_EXIT
    return 0 if abs(worst["ratio"] - 1) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
