"""`fastformer-bench gate`: compare a candidate with a baseline; exit 1 on a regression or an incorrect point.

Modes (modes.py): A/B (``--baseline-rev``: both measured now, interleaved; ab.py), stored (``--baseline-results``:
refused unless the fingerprints match; stored.py), instruction counts (``--instructions``: callgrind, A/B;
instructions.py). A side's processes and environment in sides.py, the scripts they run in workers/. Statistics
in stats.py, pairing and verdicts in compare.py, output in table.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from fastformer_bench import axes
from fastformer_bench.gate import ab, compare, instructions, modes, sides, stats, table

#: where --layouts takes its default when the command line gives none. Each layout is one more valgrind process
#: per side (~50 s of CPU importing torch), so the test of the pull-request workflow (suites/gate/
#: test_workflow.py), which runs the workflow's command lines as written, sets it to 1; the workflow never does.
LAYOUTS_ENV = "FASTFORMER_BENCH_GATE_LAYOUTS"
#: A/B rounds counted: on the 2-core VM, with 12 rounds (no warm-up, no follow-up, no order term) the self-test
#: caught 1.05x in 17 of 20 gates, 1.10x and 1.25x in 20 of 20, with no false alarm; with 2 warm-up rounds,
#: follow-up rounds and the start-order term, 1.05x in 19 of 20, 1.10x and 1.25x in 20 of 20, no false alarm,
#: median 220 s a gate (scripts/gate_selftest.py; README)
DEFAULT_ROUNDS = 12
#: where --rounds takes its default when the command line gives none (the workflow's test sets 4: it gates a 2x
#: slowdown, and CI's time is short; the workflow never does)
ROUNDS_ENV = "FASTFORMER_BENCH_GATE_ROUNDS"
#: where --warmup-rounds takes its default when the command line gives none (the workflow's test sets 0)
WARMUP_ROUNDS_ENV = "FASTFORMER_BENCH_GATE_WARMUP_ROUNDS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The gate's options, on the subparser cli.build_parser gives it."""
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
                        help="stored baseline: scale memory-bound points by the runs' copy-bandwidth ratio instead of "
                             "refusing runs whose bandwidths differ by more than 10 %%")
    parser.add_argument("--candidate-impl", metavar="I[,I...]",
                        help="the candidate measures these instead, paired by position with --impl")
    axes.add_overrides(parser, modes.RUN_AXES)
    parser.add_argument("--rounds", type=int, default=os.environ.get(ROUNDS_ENV) or str(DEFAULT_ROUNDS),
                        help=f"A/B rounds, each a fresh pair of processes (default {DEFAULT_ROUNDS}, or "
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


def _estimate(rows: list) -> list[str]:
    """How the compared time rows were estimated (compare.paired decides per point)."""
    paired = any(r.round_ratios is not None for r in rows)
    pooled = any(r.round_ratios is None and r.ratio is not None for r in rows)
    said = []
    if paired:
        said.append("paired rounds: geometric mean of the rounds' ratios of medians, Student's t interval and "
                    "test over rounds, with the sides' start order (alternating by round) as a term")
    if pooled:
        said.append("pooled samples: ratio of medians, percentile bootstrap interval, Mann-Whitney U test")
    return said


def resolution(rows: list) -> str:
    """What a time gate could see at this run's noise: the median over points of the slowdown each point's
    interval lets the rule flag about half the time (a smaller one may pass unseen), with the least sensitive."""
    found = sorted(r.flagged_from for r in rows if r.flagged_from is not None)
    if not found:
        return ""
    return (f"at this run's noise a point is flagged from about {100 * (statistics.median(found) - 1):.1f} % slower "
            f"(median over points; least sensitive {100 * (found[-1] - 1):.1f} %); ")


def main(args: argparse.Namespace) -> int:
    """Run the gate the parsed ``args`` describe; 0 pass, 1 regression or incorrect point (2 via ValueError)."""
    started = time.monotonic()
    _check(args)
    repo = Path(args.repo).resolve() if args.repo else sides.package_tree()
    base_impls, cand_impls, pairs = modes.impls(args)
    if args.baseline_rev:
        sides.resolve_rev(repo, args.baseline_rev)  # a mistyped revision fails before anything is imported
    mode = "instructions" if args.instructions else "wall_ab" if args.baseline_rev else "stored"
    try:
        baseline, candidate, title = modes.MODES[mode](args, repo, base_impls, cand_impls, pairs)
    except sides.GateError as exc:
        print(f"fastformer-bench gate: {exc}", file=sys.stderr)
        return 1  # a side that cannot be measured at all fails the check; it is not a wrong request
    rows = compare.compare(baseline, candidate, pairs=pairs, instructions=args.instructions,
                           margin=args.margin, alpha=args.alpha, percent=args.instr_threshold)
    failed = [r for r in rows if r.fails]
    compared = [r for r in rows if r.ratio is not None]
    rule = (f"regression: more than {args.instr_threshold:g} % more instructions" if args.instructions else
            f"regression: the 95% interval of the time ratio above {1 + args.margin:g} and a one-sided test's "
            f"q < {args.alpha:g}, false-discovery rate controlled across points (Benjamini-Hochberg)"
            + "".join(f"; {how}" for how in _estimate(rows)))
    verdict = "FAIL" if failed or not compared else "PASS"
    summary = (f"{verdict}: {len(failed)} of {len(rows)} points fail, {len(compared)} compared ({rule}); "
               f"{resolution(rows)}{time.monotonic() - started:.0f} s")
    instructions = bool(args.instructions)
    table.print_table(rows, title, instructions)
    print(summary)
    for path in filter(None, (args.markdown, args.json)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.markdown:
        Path(args.markdown).write_text(table.markdown(rows, title, instructions, summary))
    if args.github:
        _to_github(rows, title, instructions, summary)
    if args.json:
        table.write_json(args.json, rows, {"title": title, "passed": verdict == "PASS", "mode": mode,
                                           "wall_s": time.monotonic() - started, "summary": summary})
    return 1 if failed or not compared else 0
