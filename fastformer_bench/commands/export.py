"""`fastformer-bench export RESULTS_DIR --format FORMAT [--out FILE]`: stored results in the formats other tools
read (the formats themselves in fastformer_bench/export.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NAME = "export"
HELP = "write stored results for other tools (pytest-benchmark, github-action-benchmark, csv)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastformer_bench.export import FORMATS

    parser.add_argument("results", metavar="RESULTS_DIR", help="a results directory (points.jsonl + run.json)")
    parser.add_argument("--format", required=True, metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)}: pytest-benchmark's JSON (for `pytest-benchmark "
                             "compare`), github-action-benchmark's customSmallerIsBetter list, or one CSV row "
                             "per record")
    parser.add_argument("--out", metavar="FILE", help="write here (default: standard output)")


def main(args: argparse.Namespace) -> int:
    """Export as ``args`` asks; 0 when written (a ValueError, which the CLI turns into exit 2, otherwise)."""
    from fastformer_bench.export import render

    text, summary = render(args.results, args.format)
    if args.out:
        _write_atomic(Path(args.out), text)
        print(f"{summary} to {args.out}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
        print(summary, file=sys.stderr)
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
