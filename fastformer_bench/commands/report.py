"""`fastformer-bench report RESULTS... --out DIR`: figures and REPORT.md from stored results."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "build figures and REPORT.md from stored results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="result directories (or points.jsonl files)")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--include-contended", action="store_true",
                        help="treat points timed under CPU contention (status contended) as ok")
    parser.add_argument("--include-noisy", action="store_true",
                        help="treat CUDA points whose p20-p80 spread stayed above max_spread (status noisy) as ok")


def main(args: argparse.Namespace) -> int:
    from fastformer_bench.report import build_report

    build_report(args.results, args.out, include_contended=args.include_contended, include_noisy=args.include_noisy)
    print(f"report written to {args.out}/REPORT.md")
    return 0
