"""Speedup over the softmax baselines: at a fixed N, and at the largest N both implementations ran."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import asymptotics
from fastformer_bench.report.fmt import count, times
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections import launch
from fastformer_bench.report.sections.rows import key_columns, shape_of, slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"speedups": asymptotics.speedups(frame)}


def conclusions(s: dict) -> list[str]:
    """One line per slice, shape and baseline: each linear additive implementation's speedup at the fixed N and
    at the largest N both ran."""
    out, groups = [], {}
    for r in s.get("speedups", []):
        if r.get("complexity") == "linear":
            groups.setdefault((slice_of(r), shape_of(r), r["width"], r["baseline"]), []).append(r)
    for (slice_, shape, width, baseline), group in sorted(groups.items()):
        group.sort(key=lambda r: -(r["speedup_at_largest_n"] or 0))
        fixed = ", ".join(f"{r['impl']} {times(r['speedup'])}" for r in group if r["speedup"] is not None)
        largest = ", ".join(f"{r['impl']} {times(r['speedup_at_largest_n'])} (N = {count(r['largest_n'])})"
                            for r in group)
        at = f"at N = {count(group[0]['speedup_at_n'])}: {fixed}; " if fixed else \
            f"none measured beside it at N = {count(group[0]['speedup_at_n'])}; "
        out.append(f"- Speedup over {baseline} ({slice_}, {shape}, width {width}), t({baseline}) / t(impl): {at}"
                   f"at the largest N both ran: {largest}.")
    return out


def _launch_bound(s: dict, r: dict) -> str:
    """Which of a launch-timed row's two implementations are launch-bound at its two N (sections.launch)."""
    named = [impl for impl in (r["impl"], r["baseline"])
             if any(launch.bound_at(s, r, impl, n) for n in (r["speedup_at_n"], r["largest_n"]))]
    return ", ".join(named) or "-"


def tables(s: dict) -> list[str]:
    marked = "launch_bound" in s  # the column only where points were timed both ways
    return titled("Speedup over softmax baselines at fixed N", [
        {**key_columns(r), "baseline": r["baseline"], f"at N = {count(r['speedup_at_n'])}": times(r["speedup"]),
         "largest N both ran": count(r["largest_n"]), "at the largest N": times(r["speedup_at_largest_n"]),
         **({"launch-bound": _launch_bound(s, r)} if marked else {})}
        for r in s.get("speedups", [])])
