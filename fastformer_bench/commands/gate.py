"""`fastformer-bench gate`: compare a candidate with a baseline; exit 1 on a regression or an incorrect point.

Its options, their checks and its outputs (table, markdown, GitHub annotations, JSON); the gate itself is
fastformer_bench/gate/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fastformer_bench import axes, gate
from fastformer_bench.gate import ab, instructions, modes, sides, stats, table

NAME = "gate"
HELP = "compare a candidate with a baseline; exit 1 on regression"
#: where --layouts takes its default when the command line gives none. Each layout is one more valgrind process
#: per side (~50 s of CPU importing torch), so the test of the pull-request workflow (suites/gate/
#: test_workflow.py), which runs the workflow's command lines as written, sets it to 1; the workflow never does.
LAYOUTS_ENV = "FASTFORMER_BENCH_GATE_LAYOUTS"
#: where --rounds takes its default when the command line gives none (the workflow's test sets 4: it gates a 2x
#: slowdown, and CI's time is short; the workflow never does)
ROUNDS_ENV = "FASTFORMER_BENCH_GATE_ROUNDS"
#: where --warmup-rounds takes its default when the command line gives none (the workflow's test sets 0)
WARMUP_ROUNDS_ENV = "FASTFORMER_BENCH_GATE_WARMUP_ROUNDS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base = parser.add_argument_group("baseline (one of)")
    base.add_argument("--baseline-rev", metavar="REV", help="A/B: measure this git revision now, in a worktree")
    base.add_argument("--baseline-results", metavar="DIR", help="a stored results directory (same fingerprint)")
    parser.add_argument("--candidate-results", metavar="DIR",
                        help="with --baseline-results: stored candidate results (default: measure this tree now)")
    parser.add_argument("--instructions", action="store_true",
                        help="compare callgrind instruction counts (CPU, deterministic) instead of wall time")
    parser.add_argument("--preset", help=f"points to measure (default: {modes.WALL_PRESET}; "
                                         f"{modes.INSTRUCTION_PRESET} with --instructions; a stored baseline's own "
                                         "preset)")
    parser.add_argument("--impl", metavar="I[,I...]", help="implementations to measure (the baseline side)")
    parser.add_argument("--normalize", action="store_true",
                        help="experimental (docs/gate.md §4: an A/A check left normalised ratios 0.74-1.20 "
                             "from 1): stored baseline: scale memory-bound points by the runs' copy-bandwidth ratio "
                             "instead of refusing runs whose bandwidths differ by more than 10 %%")
    parser.add_argument("--candidate-impl", metavar="I[,I...]",
                        help="the candidate measures these instead, paired by position with --impl")
    axes.add_overrides(parser, modes.RUN_AXES)
    parser.add_argument("--rounds", type=int, default=os.environ.get(ROUNDS_ENV) or str(gate.DEFAULT_ROUNDS),
                        help=f"A/B rounds, each a fresh pair of processes (default {gate.DEFAULT_ROUNDS}, or "
                             f"${ROUNDS_ENV} where set); from "
                             f"{stats.MIN_PAIRED_ROUNDS} on, each round's ratio is one observation (Student's t "
                             "over rounds), below that the samples are pooled")
    parser.add_argument("--warmup-rounds", type=int,
                        default=os.environ.get(WARMUP_ROUNDS_ENV) or str(ab.WARMUP_ROUNDS),
                        help="A/B: rounds measured first and not counted (default "
                             f"{ab.WARMUP_ROUNDS}, or ${WARMUP_ROUNDS_ENV} where set): a gate's first rounds read "
                             "dispatch-heavy points a few percent off")
    parser.add_argument("--max-rounds", type=int,
                        help="A/B: a point measured slower than 1 + MARGIN but not flagged after --rounds is measured "
                             f"in up to this many rounds in all, {modes.FOLLOW_UP_STEP} more at a time, until it is "
                             "decided (default: twice --rounds; --rounds turns the follow-up off)")
    parser.add_argument("--min-time", type=float, help="seconds of samples per point, side and round (default: "
                                                        "the preset's min_time_s, in samples of about 5 ms)")
    parser.add_argument("--margin", type=float, default=stats.DEFAULT_MARGIN,
                        help="a regression's 95%% interval of the time ratio must lie above 1 + MARGIN "
                             "(default 0.02)")
    parser.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA,
                        help="false-discovery rate across the gate's points (Benjamini-Hochberg over one-sided "
                             "tests: Student's t over paired rounds, Mann-Whitney U on pooled samples; default 0.05)")
    parser.add_argument("--instr-threshold", type=float, default=stats.DEFAULT_INSTRUCTION_PERCENT,
                        metavar="PERCENT", help="instruction-count increase that is a regression (default 1)")
    parser.add_argument("--calls", type=int, default=instructions.DEFAULT_CALLS,
                        help="calls per counted region (--instructions)")
    # A string default goes through type=int, so a bad $LAYOUTS_ENV is a usage error (exit 2) like a bad option.
    parser.add_argument("--layouts", type=int, default=os.environ.get(LAYOUTS_ENV) or str(instructions.DEFAULT_LAYOUTS),
                        help="memory layouts each side is counted under, its count their mean (--instructions; "
                             f"default {instructions.DEFAULT_LAYOUTS}, or ${LAYOUTS_ENV} where set)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    parser.add_argument("--github", action="store_true",
                        help="GitHub Actions: append the markdown to $GITHUB_STEP_SUMMARY and print one ::error "
                             "annotation per failing point")
    parser.add_argument("--json", metavar="FILE", help="also write every compared point as JSON")
    parser.add_argument("--repo", metavar="DIR", help="the candidate tree and git repository (default: this one)")


def _check(args: argparse.Namespace) -> None:
    """ValueError (exit 2) for a request that cannot mean anything."""
    if bool(args.baseline_rev) == bool(args.baseline_results):
        raise ValueError("gate needs exactly one baseline: --baseline-rev REV or --baseline-results DIR.")
    if args.candidate_results and not args.baseline_results:
        raise ValueError("--candidate-results goes with --baseline-results.")
    if not 0 <= args.margin < 1:
        raise ValueError(f"--margin is a fraction of the baseline time in [0, 1), got {args.margin:g}.")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha is a significance level and must lie in (0, 1), got {args.alpha:g}.")
    if args.warmup_rounds < 0:
        raise ValueError(f"--warmup-rounds must be at least 0, got {args.warmup_rounds}.")
    if args.max_rounds is None:
        args.max_rounds = 2 * args.rounds
    if args.max_rounds < args.rounds:
        raise ValueError(f"--max-rounds ({args.max_rounds}) cannot be less than --rounds ({args.rounds}).")
    if args.calls < 1 or args.layouts < 1:
        raise ValueError(f"--calls and --layouts must be positive, got {args.calls} and {args.layouts}.")
    if not args.instr_threshold > 0:
        raise ValueError(f"--instr-threshold must be a positive percentage, got {args.instr_threshold:g}.")


def main(args: argparse.Namespace) -> int:
    """Run the gate the parsed ``args`` describe; 0 pass, 1 regression or incorrect point (2 via ValueError)."""
    started = time.monotonic()
    _check(args)
    try:
        verdict = gate.run(args, started)
    except sides.GateError as exc:
        print(f"fastformer-bench gate: {exc}", file=sys.stderr)
        return 1  # a side that cannot be measured at all fails the check; it is not a wrong request
    rows, title, summary, counts = verdict.rows, verdict.title, verdict.summary, bool(args.instructions)
    table.print_table(rows, title, counts)
    print(summary)
    for path in filter(None, (args.markdown, args.json)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.markdown:
        Path(args.markdown).write_text(table.markdown(rows, title, counts, summary))
    if args.github:
        _to_github(rows, title, counts, summary)
    if args.json:
        table.write_json(args.json, rows, {"title": title, "passed": verdict.passed, "mode": verdict.mode,
                                           "wall_s": time.monotonic() - started, "summary": summary})
    return 0 if verdict.passed else 1


def _to_github(rows: list, title: str, instructions: bool, summary: str) -> None:
    for line in table.github_annotations(rows, instructions):
        print(line)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(table.markdown(rows, title, instructions, summary) + "\n")
    else:
        print("gate: --github: GITHUB_STEP_SUMMARY is not set (not inside GitHub Actions); annotations only",
              file=sys.stderr)
