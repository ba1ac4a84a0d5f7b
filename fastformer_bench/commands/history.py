"""`fastformer-bench history add|show`: file runs per commit, and show each point's trend with its steps."""

from __future__ import annotations

import argparse

NAME = "history"
HELP = "file runs per commit and show each point's trend with its steps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="history_command", required=True)  # the parent's class: one-line errors
    add = sub.add_parser("add", help="file a run under HISTORY/<machine>/ (time or instruction counts)")
    add.add_argument("results", help="a results directory (run.json + points), or the --json report of an "
                                     "instruction gate (then give --commit)")
    add.add_argument("--history", default="results/history", help="history folder (default results/history)")
    add.add_argument("--commit", help="the commit the results measured (default: run.json's git_commit)")
    show = sub.add_parser("show", help="trend figures, steps and HISTORY.md from the filed runs")
    show.add_argument("--history", default="results/history", help="history folder (default results/history)")
    show.add_argument("--out", required=True, help="output folder (HISTORY.md, history.json, figures/)")
    show.add_argument("--normalize", action="store_true",
                      help="scale memory-bound points by the runs' copy bandwidth (else differing runs exit 2)")
    show.add_argument("--margin", type=float, default=0.02, help="smallest step reported, as a fraction (default 0.02)")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench import history

    if args.history_command == "add":
        print(f"filed {history.add(args.results, args.history, commit=args.commit)}")
        return 0
    if not 0 <= args.margin < 1:
        raise ValueError(f"--margin is a fraction in [0, 1), got {args.margin:g}.")
    summary = history.show(args.history, args.out, normalize=args.normalize, margin=args.margin)
    for machine in summary["machines"]:
        print(f"{machine['machine']}: {machine['runs']} runs, {len(machine['steps'])} step(s)")
        for step in machine["steps"]:
            print(f"  {step['point']}: {step['ratio']:.3f}x [{step['ci_low']:.3f}-{step['ci_high']:.3f}] "
                  f"from {step['commit'][:12]}")
    return 0
