"""`fastformer-bench compare A B`: any two stored runs point by point, the B/A time ratio of each point both hold
with its 95 % interval, largest slowdown first; exit 0 whatever it finds (it reports, it does not gate).

The comparison is fastformer_bench/gate/runs.py (the stored-baseline gate's pieces, docs/gate.md §10); this
module is its options and its three outputs: a table for people, ``--markdown`` and ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

from fastformer_bench.report import fmt

NAME = "compare"
HELP = "compare two stored runs point by point: B/A time ratios with 95 %% intervals, largest slowdown first"
COLUMNS = ("point", "A", "B", "B/A", "95% interval", "verdict", "note")
#: the note column's width on the terminal; --markdown and --json carry every reason whole
NOTE_WIDTH = 60
METHOD = ("B/A: median time per call in B over A; 95% interval: percentile bootstrap of that ratio over the raw "
          "samples (2,000 resamples, each run resampled on its own), as the stored-baseline gate; verdict: the "
          "gate's rule (interval beyond 1 +/- 2% and a one-sided Mann-Whitney test at a 5% false-discovery rate "
          "across the compared points)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="the run compared against: a results directory (points + run.json)")
    parser.add_argument("b", metavar="B", help="the run compared: a results directory")
    parser.add_argument("--normalize", action="store_true",
                        help="experimental (docs/gate.md §4): scale B's memory-bound (linear) points by the runs' "
                             "copy-bandwidth ratio, as the gate's --normalize does")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="name the points only one run holds (the files always name them)")
    for flag, what in (("--markdown", "markdown"), ("--json", "JSON")):
        parser.add_argument(flag, metavar="FILE", help=f"also write every point as {what} ('-': standard output)")


def main(args: argparse.Namespace) -> int:
    """Compare the two runs; 0 once reported (a bad directory or no shared point: ValueError, exit 2)."""
    from fastformer_bench.gate.runs import compare_runs

    if args.markdown == "-" and args.json == "-":
        raise ValueError("only one of --markdown and --json can go to standard output ('-').")
    found = compare_runs(args.a, args.b, normalize=args.normalize)
    outputs = [(path, render) for path, render in ((args.markdown, markdown), (args.json, to_json)) if path]
    if all(path != "-" for path, _ in outputs):  # the table would spoil a machine's reading of stdout
        print(text(found, verbose=args.verbose))
    for path, render in outputs:
        if path == "-":
            sys.stdout.write(render(found))
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(render(found), encoding="utf-8")
    return 0


def _factor(value: float) -> str:
    """A ratio to 3 significant digits, trailing zeros kept (1.00, 0.198, 12.3, 1,380)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"


def _side(median: float | None, status: str) -> str:
    return fmt.si(median, "s") if status == "ok" and median is not None else status


def _note(point, width: int | None = None) -> str:
    said = [point.note] if point.note else []
    said += [f"{run} {status}: {reason}" for run, status, reason in (("A", point.status_a, point.reason_a),
                                                                     ("B", point.status_b, point.reason_b))
             if status != "ok" and reason]
    if point.scaled:
        said.append("B scaled by the copy bandwidth")
    note = "; ".join(said)
    return note if width is None or len(note) <= width else note[:width - 1] + "…"


def cells(point, note_width: int | None = None) -> list[str]:
    """One point's row: times or statuses, and a ratio only where both runs measured it ok."""
    ratio = f"{_factor(point.ratio)}×" if point.ratio is not None else ""
    interval = (f"[{_factor(point.ci_low)}, {_factor(point.ci_high)}]"
                if point.ci_low is not None and point.ci_high is not None else "")
    return [point.label, _side(point.median_a, point.status_a), _side(point.median_b, point.status_b), ratio,
            interval, point.verdict or "", _note(point, note_width)]


def _runs(found) -> list[tuple[str, str]]:
    def facts(run: dict) -> str:
        said = [f"run {run['run_id']}" if run.get("run_id") else "",
                f"commit {run['git_commit'][:7]}" if run.get("git_commit") else ""]
        said += [f"{device} copy {bandwidth / 1e9:.3g} GB/s" for device, bandwidth in run["copy_bytes_per_s"].items()]
        return ", ".join(filter(None, said))

    return [("A", f"{found.a['path']} ({facts(found.a)})"), ("B", f"{found.b['path']} ({facts(found.b)})")]


def summary(found) -> str:
    """One sentence: how many points were matched, compared, slower and faster, and held by one run only."""
    compared = found.compared
    verdicts = {v: sum(p.verdict == v for p in compared) for v in ("slower", "faster", "same")}
    unmatched = len(found.points) - len(compared)
    return (f"{len(found.points)} points in both runs, {len(compared)} compared ({verdicts['slower']} slower, "
            f"{verdicts['faster']} faster, {verdicts['same']} the same)"
            + (f", {unmatched} without a ratio (a status other than ok)" if unmatched else "")
            + f"; {len(found.only_a)} only in A, {len(found.only_b)} only in B.")


def text(found, verbose: bool = False) -> str:
    """The table for a terminal: the runs, any banner, the summary, one aligned row per point."""
    lines = [f"{name}: {what}" for name, what in _runs(found)]
    lines += [f"!! {line}" for line in found.banner]
    lines += [summary(found), ""]
    rows = [list(COLUMNS)] + [cells(p, NOTE_WIDTH) for p in found.points]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    left = {0, 5, 6}  # the point, the verdict and the note read left to right; numbers line up on the right
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    for name, only in (("A", found.only_a), ("B", found.only_b)):
        if only and verbose:
            lines += ["", f"only in {name} ({len(only)}):", *(f"  {label}" for label in only)]
    if (found.only_a or found.only_b) and not verbose:
        lines += ["", "(--verbose names the points only one run holds)"]
    lines += ["", *textwrap.wrap(METHOD, 120)]
    return "\n".join(lines)


def markdown(found) -> str:
    """The comparison as markdown: the runs, the banner as a warning, every point, the unmatched ones folded."""
    def line(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    parts = [f"**{found.b['path']} vs {found.a['path']}**: {summary(found)}", ""]
    parts += [f"- {name}: {what}" for name, what in _runs(found)] + [""]
    if found.banner:
        parts += ["> **Not comparable as they are:**", *(f"> - {line}" for line in found.banner), ""]
    parts += [line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(cells(p)) for p in found.points), ""]
    for name, only in (("A", found.only_a), ("B", found.only_b)):
        if only:
            parts += [f"<details><summary>Only in {name}: {len(only)} points</summary>", "",
                      *(f"- {label}" for label in only), "", "</details>", ""]
    return "\n".join([*parts, f"_{METHOD}_"]) + "\n"


def to_json(found) -> str:
    """Every matched point (times in seconds), the points only one run holds, both runs' facts and the banner."""
    payload = {"a": found.a, "b": found.b, "banner": found.banner, "normalized": found.normalized,
               "bandwidth_ratios": found.bandwidth_ratios, "summary": summary(found), "method": METHOD,
               "points": [asdict(p) for p in found.points], "only_a": found.only_a, "only_b": found.only_b}
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"
