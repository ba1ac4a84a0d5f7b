"""What your process gets: per implementation and size, the time under each allocator condition the records hold
(measure/allocator.py: plain, warm, thp, jemalloc, tcmalloc), its ratio to ``warm`` (the harness's own heap), the
one-line remedy that closed most of a plain process's gap with its measured effect, and the share of the roof
that matches each point's read/write mix. Absent when the records hold one condition only.

A point that names no condition was measured as ``warm`` (axes.ALLOCATORS). The roofs are run.json's read and
write roofs (measure/env.py traffic_roofs): a point reading R bytes and writing W bytes needs at least
R / read roof + W / write roof seconds, and its share is that time over its own.
"""

from __future__ import annotations

import pandas as pd

from fastformer_bench import axes
from fastformer_bench.report.analysis import SHAPE, SLICE, key_dict, least_seconds, past_llc
from fastformer_bench.report.decision import condition
from fastformer_bench.report.fmt import count, n_range, pct, si, sig, span, times
from fastformer_bench.report.numbers import num, timed
from fastformer_bench.report.output import table
from fastformer_bench.report.sections.rows import slice_of

PLAIN, WARM = "plain", "warm"
#: the conditions in the order a table shows them (axes.ALLOCATORS), then any other a record names
ORDER = axes.ALLOCATORS
#: what a user sets to get a condition (axes.REMEDY_ENV), as a shell prefix, and what it does
_DOES = {WARM: "glibc: keep freed memory in the process; the harness's own mallopt settings as environment",
         "thp": "torch asks for transparent huge pages for large CPU tensors",
         **{name: f"Debian's {axes.ALLOCATOR_PACKAGES[name]}" for name in axes.ALLOCATOR_PRELOADS}}
REMEDIES = {name: "`" + " ".join(f"{k}={v}" for k, v in env.items()) + f"` ({_DOES[name]})"
            for name, env in axes.REMEDY_ENV.items()}
#: the grouping of one comparison: everything but the allocator, then the size
_KEYS = [k for k in SLICE if k != "allocator"] + ["impl"] + SHAPE + ["seq_len"]
#: why a share can exceed 100 % of the matching roof (one sentence each)
WHY_CACHE = ("its inputs fit in the last-level cache, so part of its reads never reach memory and the memory "
             "roofs do not bound it")
WHY_STORES = ("the write roof is timed with plain stores, each destination line read for ownership before it is "
              "written, so code that writes with non-temporal (streaming) stores moves less traffic per byte "
              "written than the roof assumes")
WHY_OVERLAP = ("its reads and writes overlap, and the read and write roofs, each timed alone, do not add up to the "
               "least time of a mix of both")


def _number(g: pd.DataFrame, column: str) -> float | None:
    if column not in g.columns:
        return None
    values = pd.to_numeric(g[column], errors="coerce").dropna()
    return num(values.median()) if len(values) and values.median() > 0 else None


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    t = timed(frame).copy()
    t["condition"] = condition(t)
    if t["condition"].nunique() < 2:
        return {}
    known = [c for c in ORDER if c in set(t["condition"])] + sorted(set(t["condition"]) - set(ORDER))
    t["past_llc"] = past_llc(t)
    rows = []
    for key, g in t.groupby(_KEYS, sort=True):
        spread = {c: _band(g[g["condition"] == c]) for c in known if (g["condition"] == c).any()}
        by = {c: band[0] for c, band in spread.items()}
        if len(by) < 2:
            continue
        row = {**key_dict(_KEYS, key), "conditions": {c: num(v, 4) for c, v in by.items()},
               "points": int(len(g)), "past_llc": bool(g["past_llc"].all()),
               "bytes_read_min": _number(g, "bytes_read_min"), "bytes_written_min": _number(g, "bytes_written_min")}
        if WARM in by:
            row["ratio_to_warm"] = {c: num(v / by[WARM], 4) for c, v in by.items()}
        if PLAIN in by:
            # a remedy counts only where it is faster than plain beyond both spreads: its p80 below plain's p20
            fixes = {c: by[c] for c in by if c != PLAIN and c in REMEDIES and spread[c][2] < spread[PLAIN][1]}
            if fixes:
                best = min(fixes, key=lambda c: (fixes[c], ORDER.index(c)))
                row["remedy"] = {"condition": best, "plain_over_remedy": num(by[PLAIN] / fixes[best], 4)}
            else:
                row["remedy"] = None
        rows.append(row)
    return {"process": {"conditions": known, "rows": rows}} if rows else {}


def _band(g: pd.DataFrame) -> tuple[float, float, float]:
    """(median, p20, p80) of one condition's points, each the median over the points (p20/p80 fall back to the
    median where a record lacks them)."""
    median = float(g["time_median"].median())
    low, high = (float(pd.to_numeric(g[c], errors="coerce").median()) if c in g.columns else median
                 for c in ("time_p20", "time_p80"))
    return median, (median if pd.isna(low) else low), (median if pd.isna(high) else high)


def _roof(runs: list[dict], device: str, threads) -> dict | None:
    """The first run.json roof measured on ``device`` at ``threads`` with read and write roofs."""
    for run in runs:
        for roof in (run.get("env") or {}).get("roofs") or []:
            if (isinstance(roof, dict) and roof.get("device") == device and roof.get("threads") == threads
                    and (roof.get("read_bytes_per_s") or 0) > 0 and (roof.get("write_bytes_per_s") or 0) > 0):
                return roof
    return None


def share(row: dict, seconds: float, roof: dict | None) -> float | None:
    """The matching roof's time for the row's reads and writes over ``seconds`` (None without both counts)."""
    read, written = row.get("bytes_read_min"), row.get("bytes_written_min")
    if roof is None or not read or written is None or not seconds:
        return None
    return least_seconds(read, written, roof["read_bytes_per_s"], roof["write_bytes_per_s"]) / seconds


def section(s: dict, runs: list[dict]) -> list[str]:
    """The '## What your process gets' section: nothing unless the records hold two conditions or more."""
    found = s.get("process")
    if not found:
        return []
    conditions = found["conditions"]
    rows, above = [], []
    for r in found["rows"]:
        roof = _roof(runs, r.get("device", ""), r.get("threads"))
        ratios = r.get("ratio_to_warm") or {}
        cells = {"slice": slice_of(r), "impl": r["impl"], "N": count(r["seq_len"]), "D": count(r["width"]),
                 "B": count(r["batch"])}
        for c in conditions:
            seconds = r["conditions"].get(c)
            part = share(r, seconds, roof)
            if part is not None and part > 1:
                above.append((r, c, part, roof.get("write_method")))
            cells[c] = "-" if seconds is None else (
                f"{si(seconds, 's')}" + (f" ({times(ratios[c])})" if c in ratios and c != WARM else "")
                + (f", {pct(part)}" if part is not None else ""))
        remedy = r.get("remedy")
        cells["remedy (plain / with it)"] = (
            f"{REMEDIES[remedy['condition']].split(' (')[0]}: {times(remedy['plain_over_remedy'])}" if remedy
            else "none needed" if "remedy" in r else "-")
        rows.append(cells)
    named = [c for c in conditions if any((r.get("remedy") or {}).get("condition") == c for r in found["rows"])]
    lines = (["Remedies, as a user sets them: " + "; ".join(f"`{c}`: {REMEDIES[c]}" for c in named) + ".", ""]
             if named else []) + _summary_lines(found["rows"])
    out = ["## What your process gets", "",
           "The same calls timed in processes whose allocator differs (measure/allocator.py; docs/measuring.md §6): "
           "`plain` is what a user's `python` gets, `warm` the harness's kept heap. Each cell: the median time, "
           "its ratio to `warm` in brackets, and the share of the roof matching the point's reads and writes "
           "(bytes_read_min / read roof + bytes_written_min / write roof, over the time) where run.json has "
           "those roofs. A remedy is named only where it is faster than plain beyond both spreads (its p80 below "
           "plain's p20).", ""]
    out += lines + ([""] if lines else []) + [table(rows), ""]
    for r, c, part, method in above:
        why = WHY_CACHE if not r.get("past_llc") else WHY_STORES if method in (None, "plain") else WHY_OVERLAP
        out.append(f"- Above 100 %: {r['impl']} at N = {count(r['seq_len'])} under {c} reaches {pct(part)} of "
                   f"the matching roof because {why}.")
    return out + ([""] if above else [])


def _summary_lines(found: list[dict]) -> list[str]:
    """One bullet per implementation, setting and width: how far a plain process is from the warm heap over the
    sizes measured, which remedy closed the gap at which N (with its measured effect), and where none was needed."""
    lines = []
    groups: dict[tuple, list[dict]] = {}
    for r in found:
        if PLAIN in r["conditions"]:
            groups.setdefault((r["impl"], slice_of(r), r["width"], r["batch"]), []).append(r)
    for (impl, where, width, batch), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seq_len"])
        ratios = [r["ratio_to_warm"][PLAIN] for r in rs if PLAIN in (r.get("ratio_to_warm") or {})]
        head = (f"- {impl} ({where}), D = {count(width)}, B = {count(batch)}, "
                f"N = {n_range(rs[0]['seq_len'], rs[-1]['seq_len'])}: a plain process takes "
                + (f"{span(ratios, sig, '×')} the warm heap's time" if ratios else
                   span([r['conditions'][PLAIN] for r in rs], lambda v: si(v, 's'))))
        fixed: dict[str, list[dict]] = {}
        for r in rs:
            if r.get("remedy"):
                fixed.setdefault(r["remedy"]["condition"], []).append(r)
        parts = [f"`{c}` at N = {', '.join(count(r['seq_len']) for r in got)} "
                 f"({span([r['remedy']['plain_over_remedy'] for r in got], sig, '×')} faster than plain)"
                 for c, got in sorted(fixed.items(), key=lambda item: -len(item[1]))]
        unneeded = [count(r["seq_len"]) for r in rs if "remedy" in r and not r["remedy"]]
        if unneeded:
            parts.append(f"none needed at N = {', '.join(unneeded)} (no condition faster than plain beyond the "
                         f"spreads)")
        lines.append(head + ("; " + "; ".join(parts) if parts else "") + ".")
    return lines
