"""The gate: compare a candidate with a baseline; a regression or an incorrect point fails it (``run``). The
command, its options and its output files are commands/gate.py.

Modes (modes.py): A/B (``--baseline-rev``: both measured now, interleaved; ab.py), stored (``--baseline-results``:
refused unless the fingerprints match; stored.py), instruction counts (``--instructions``: callgrind, A/B;
instructions.py). A side's processes and environment in sides.py, the scripts they run in workers/. Statistics
in stats.py, pairing and verdicts in compare.py, output in table.py.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from fastformer_bench.gate import compare, modes, sides

#: A/B rounds counted: as many as the self-test needed to catch a 1.05x slowdown without a false alarm, in
#: about four minutes a gate (every self-test's figures: docs/gate.md §9)
DEFAULT_ROUNDS = 12


@dataclass(frozen=True)
class Verdict:
    """A gate's compared rows, its title and mode, and the one-line summary that says whether it passed."""

    rows: list
    title: str
    mode: str
    summary: str
    passed: bool


def run(args: argparse.Namespace, started: float) -> Verdict:
    """Measure (or read) both sides the parsed ``args`` describe and compare them (``started``: the gate's
    time.monotonic() start, for the summary); sides.GateError when a side cannot be measured at all."""
    repo = Path(args.repo).resolve() if args.repo else sides.package_tree()
    base_impls, cand_impls, pairs = modes.impls(args)
    if args.baseline_rev:
        sides.resolve_rev(repo, args.baseline_rev)  # a mistyped revision fails before anything is imported
    mode = "instructions" if args.instructions else "wall_ab" if args.baseline_rev else "stored"
    baseline, candidate, title = modes.MODES[mode](args, repo, base_impls, cand_impls, pairs)
    rows = compare.compare(baseline, candidate, pairs=pairs, instructions=args.instructions,
                           margin=args.margin, alpha=args.alpha, percent=args.instr_threshold)
    failed = [r for r in rows if r.fails]
    compared = [r for r in rows if r.ratio is not None]
    rule = (f"regression: more than {args.instr_threshold:g} % more instructions" if args.instructions else
            f"regression: the 95% interval of the time ratio above {1 + args.margin:g} and a one-sided test's "
            f"q < {args.alpha:g}, false-discovery rate controlled across points (Benjamini-Hochberg)"
            + "".join(f"; {how}" for how in _estimate(rows)))
    passed = not failed and bool(compared)
    summary = (f"{'PASS' if passed else 'FAIL'}: {len(failed)} of {len(rows)} points fail, {len(compared)} compared "
               f"({rule}); {resolution(rows)}{time.monotonic() - started:.0f} s")
    return Verdict(rows=rows, title=title, mode=mode, summary=summary, passed=passed)


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
