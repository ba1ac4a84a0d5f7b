"""`fastformer-bench history add|backfill|show`: file runs per commit (one run, or a range of commits measured
now), and show each point's trend with its steps, outliers and gaps (HISTORY.md and figures, or HTML pages)."""

from __future__ import annotations

import argparse
import sys

NAME = "history"
HELP = "file runs per commit (or measure a range of commits) and show each point's trend with its steps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="history_command", required=True)  # the parent's class: one-line errors
    add = sub.add_parser("add", help="file a run under HISTORY/<machine>/ (time or instruction counts)")
    add.add_argument("results", help="a results directory (run.json + points), or the --json report of an "
                                     "instruction gate (then give --commit)")
    add.add_argument("--history", default="results/history", help="history folder (default results/history)")
    add.add_argument("--commit", help="the commit the results measured (default: run.json's git_commit)")
    fill = sub.add_parser("backfill", help="measure each commit of a range with this tree's harness and preset, "
                                           "and file it (resumable)")
    fill.add_argument("range", metavar="A..B", help="the commits: a range (first-parent history, as git rev-list "
                                                    "A..B) or one revision")
    fill.add_argument("--preset", default="history", help="the points, from this tree (default history)")
    fill.add_argument("--history", default="results/history", help="history folder (default results/history)")
    fill.add_argument("--repo", default=".", help="the repository the commits are in (default: here)")
    fill.add_argument("--step", type=int, default=1, help="measure every K-th commit, the newest always (default 1)")
    fill.add_argument("--dry-run", action="store_true", help="list the commits it would measure, measure none")
    show = sub.add_parser("show", help="trend figures, steps and HISTORY.md (--out), or interactive pages (--html)")
    show.add_argument("--history", default="results/history", help="history folder (default results/history)")
    show.add_argument("--out", help="output folder (HISTORY.md, history.json, figures/)")
    show.add_argument("--html", metavar="DIR", help="write one self-contained interactive page per machine "
                                                    "(<machine>.html) and index.html here")
    show.add_argument("--commit-url", metavar="TEMPLATE",
                      help="the pages' link for a commit, with {commit} (default: from `git remote get-url origin` "
                           "on GitHub or GitLab; else no links)")
    show.add_argument("--repo", default=".", help="the repository whose origin names the commit URL (default: here)")
    show.add_argument("--normalize", action="store_true",
                      help="experimental (docs/gate.md §4): scale memory-bound points by the runs' copy bandwidth "
                           "(else differing runs exit 2)")
    show.add_argument("--margin", type=float, default=0.02, help="smallest step reported, as a fraction (default 0.02)")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench import history

    if args.history_command == "add":
        print(f"filed {history.add(args.results, args.history, commit=args.commit)}")
        return 0
    if args.history_command == "backfill":
        return _backfill(args)
    if not 0 <= args.margin < 1:
        raise ValueError(f"--margin is a fraction in [0, 1), got {args.margin:g}.")
    if not args.out and not args.html:
        raise ValueError("history show writes HISTORY.md and figures (--out DIR), pages (--html DIR), or both.")
    if args.html:
        from fastformer_bench.history import html

        url = args.commit_url or html.commit_url_from(args.repo)
        if url is not None and "{commit}" not in url:
            raise ValueError(f"--commit-url must hold {{commit}}, got {url!r}.")
        pages = html.write(args.history, args.html, normalize=args.normalize, margin=args.margin, commit_url=url)
        print(f"wrote {len(pages)} page(s) and index.html to {args.html}"
              + ("" if url else " (no commit URL known: points do not link to commits)"))
    if not args.out:
        return 0
    summary = history.show(args.history, args.out, normalize=args.normalize, margin=args.margin)
    for machine in summary["machines"]:
        print(f"{machine['machine']}: {machine['runs']} runs, {len(machine['steps'])} step(s), "
              f"{len(machine.get('outliers', []))} outlier(s)")
        for step in machine["steps"]:
            print(f"  {step['point']}: {step['ratio']:.3f}x [{step['ci_low']:.3f}-{step['ci_high']:.3f}] "
                  f"from {step['commit'][:12]}")
        for spike in machine.get("outliers", []):
            print(f"  {spike['point']}: outlier {spike['ratio']:.3f}x at {spike['commit'][:12]} only")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from fastformer_bench.gate.sides import GateError
    from fastformer_bench.history.backfill import backfill

    summary: dict = {}
    try:
        summary = backfill(args.range, preset=args.preset, history=args.history, repo=args.repo, step=args.step,
                           dry_run=args.dry_run)
    except GateError as exc:  # the machine, not a commit's code (a worktree git refused): nothing more is filed
        print(f"fastformer-bench history backfill: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("history backfill: interrupted; the commits finished are filed, and the same command goes on from "
              "the next one.", file=sys.stderr)
        raise
    if not args.dry_run:
        print(f"backfill: {len(summary['measured'])} measured, {len(summary['failed'])} filed as failed, "
              f"{len(summary['skipped'])} filed already")
    return 0
