"""Achieved bandwidth and FLOP/s: each implementation's best share of its memory roof (the read and write roofs
matching its traffic, else the copy bandwidth) and its best FLOP/s."""

from __future__ import annotations

import pandas as pd

from fastformer_bench.report import analysis
from fastformer_bench.report.fmt import count, pct, si
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"throughput": analysis.throughput(frame)}


def _share(t: dict) -> tuple[float | None, dict, bool]:
    """(best share, the point it was reached at, whether against the matching read/write roofs): those roofs
    where the run measured them, else bytes_min / time over the copy bandwidth."""
    if t.get("matching_share_max") is not None:
        return t["matching_share_max"], t["matching_at"], True
    return t["fraction_of_copy"], t["best_bw_at"], False


def bandwidth_sentence(t: dict) -> str:
    """One implementation's best share of its memory roof (``_share``). Above the roof means a cache-resident
    working set only where the inputs fit the last-level cache; past it, the roof reading was low (it varies
    within a run on shared machines)."""
    share, at, matching = _share(t)
    if matching:
        bandwidth = f"{si(t['best_bytes_per_s'], 'B/s')} of bytes_min / time"
        text = (f" = {pct(share)} of the roofs matching its reads and writes (read "
                f"{si(t['read_bytes_per_s'], 'B/s')}, write {si(t['write_bytes_per_s'], 'B/s')})")
        doubted = "roof readings, not a cache, are"
    else:
        bandwidth = si(t["best_bytes_per_s"], "B/s")
        text = f" = {pct(share)} of the copy bandwidth {si(t['copy_bytes_per_s'], 'B/s')}" if share is not None else ""
        doubted = "copy reading, not a cache, is"
    best = t.get("matching_share_best")
    if (share or 0) > 1 and not at.get("past_llc"):
        text += ", above the roof, so that working set likely stayed in cache"
    elif (share or 0) > 1 and best is not None and best <= 1:
        text += (", above the roofs read at the run's start with inputs larger than the last-level cache: those "
                 f"readings were low (against the run's best readings it is {pct(best)})")
    elif (share or 0) > 1:
        text += f", above the roof with inputs larger than the last-level cache, so the {doubted} what to doubt"
    return (f"- {t['impl']} ({slice_of(t)}) reaches at most {bandwidth}{text} "
            f"(at N = {count(at['seq_len'])}, width {at['width']}); best {si(t['best_flops_per_s'], 'FLOP/s')}.")


def conclusions(s: dict) -> list[str]:
    return [bandwidth_sentence(t) for t in s["throughput"] if t["best_bytes_per_s"] is not None]


def tables(s: dict) -> list[str]:
    return titled("Achieved bandwidth and FLOP/s", [
        {"slice": slice_of(t), "impl": t["impl"], "best bytes_min / time": si(t["best_bytes_per_s"], "B/s"),
         "roof": _roof_text(t), "best share of the roof": _share_text(t),
         "best FLOP/s": si(t["best_flops_per_s"], "FLOP/s")} for t in s["throughput"]])


def _roof_text(t: dict) -> str:
    if _share(t)[2]:
        return f"read {si(t['read_bytes_per_s'], 'B/s')}, write {si(t['write_bytes_per_s'], 'B/s')}"
    return f"copy {si(t['copy_bytes_per_s'], 'B/s')}"


def _share_text(t: dict) -> str:
    share = _share(t)[0]
    return "-" if share is None else pct(share) + (" (see the finding)" if share > 1 else "")
