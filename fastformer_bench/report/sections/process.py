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
from fastformer_bench.report.analysis import SHAPE, SLICE, key_dict, past_llc
from fastformer_bench.report.decision import condition
from fastformer_bench.report.fmt import count, pct, si, times
from fastformer_bench.report.numbers import num, timed
from fastformer_bench.report.output import table
from fastformer_bench.report.sections.rows import slice_of

PLAIN, WARM = "plain", "warm"
#: the conditions in the order a table shows them (axes.ALLOCATORS), then any other a record names
ORDER = axes.ALLOCATORS
#: what a user sets to get a condition: the environment of the process (glibc reads MALLOC_* at start-up, torch
#: reads THP_MEM_ALLOC_ENABLE before its first allocation; Debian's library names for LD_PRELOAD)
REMEDIES = {
    WARM: "`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=18446744073709551615 MALLOC_ARENA_MAX=1` (glibc: keep freed "
          "memory in the process; the harness's own mallopt settings as environment)",
    "thp": f"`{axes.THP_ENV}=1` (torch asks for transparent huge pages for large CPU tensors)",
    **{name: f"`LD_PRELOAD={library}` (Debian's {axes.ALLOCATOR_PACKAGES[name]})"
       for name, library in axes.ALLOCATOR_PRELOADS.items()},
}
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
        by = {c: float(g.loc[g["condition"] == c, "time_median"].median()) for c in known
              if (g["condition"] == c).any()}
        if len(by) < 2:
            continue
        row = {**key_dict(_KEYS, key), "conditions": {c: num(v, 4) for c, v in by.items()},
               "points": int(len(g)), "past_llc": bool(g["past_llc"].all()),
               "bytes_read_min": _number(g, "bytes_read_min"), "bytes_written_min": _number(g, "bytes_written_min")}
        if WARM in by:
            row["ratio_to_warm"] = {c: num(v / by[WARM], 4) for c, v in by.items()}
        if PLAIN in by:
            fixes = {c: v for c, v in by.items() if c != PLAIN and c in REMEDIES}
            if fixes:
                best = min(fixes, key=lambda c: (fixes[c], ORDER.index(c)))
                row["remedy"] = {"condition": best, "plain_over_remedy": num(by[PLAIN] / fixes[best], 4)}
        rows.append(row)
    return {"process": {"conditions": known, "rows": rows}} if rows else {}


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
    return (read / roof["read_bytes_per_s"] + written / roof["write_bytes_per_s"]) / seconds


def section(s: dict, runs: list[dict]) -> list[str]:
    """The '## What your process gets' section: nothing unless the records hold two conditions or more."""
    found = s.get("process")
    if not found:
        return []
    conditions = found["conditions"]
    rows, lines, above = [], [], []
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
        cells["remedy (plain / with it)"] = (f"{REMEDIES[remedy['condition']].split(' (')[0]}: "
                                             f"{times(remedy['plain_over_remedy'])}") if remedy else "-"
        rows.append(cells)
        if remedy:
            lines.append(f"- {r['impl']} ({slice_of(r)}) at N = {count(r['seq_len'])}, D = {count(r['width'])}, "
                         f"B = {count(r['batch'])}: a plain process takes {si(r['conditions'][PLAIN], 's')}"
                         + (f", {times(ratios[PLAIN])} the warm heap's {si(r['conditions'][WARM], 's')}"
                            if PLAIN in ratios else "")
                         + f"; {REMEDIES[remedy['condition']]} brings it to "
                         f"{si(r['conditions'][remedy['condition']], 's')}, {times(remedy['plain_over_remedy'])} "
                         f"faster.")
    out = ["## What your process gets", "",
           "The same calls timed in processes whose allocator differs (measure/allocator.py; docs/measuring.md §6): "
           "`plain` is what a user's `python` gets, `warm` the harness's kept heap. Each cell: the median time, "
           "its ratio to `warm` in brackets, and the share of the roof matching the point's reads and writes "
           "(bytes_read_min / read roof + bytes_written_min / write roof, over the time) where run.json has "
           "those roofs.", ""]
    out += lines + ([""] if lines else []) + [table(rows), ""]
    for r, c, part, method in above:
        why = WHY_CACHE if not r.get("past_llc") else WHY_STORES if method in (None, "plain") else WHY_OVERLAP
        out.append(f"- Above 100 %: {r['impl']} at N = {count(r['seq_len'])} under {c} reaches {pct(part)} of "
                   f"the matching roof because {why}.")
    return out + ([""] if above else [])

