"""Far past the cache (B·N·D >= 2^25): each implementation's share of the memory roofs (the read/write roof matching
its traffic where the run measured one, and the copy) and of the GEMM roof, and the points timed while the host's
memory bandwidth sagged."""

from __future__ import annotations

import math

import pandas as pd

from fastformer_bench.report import asymptotics
from fastformer_bench.report.fmt import count, short, si
from fastformer_bench.report.output import titled
from fastformer_bench.report.sections.rows import slice_of


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    slumps = asymptotics.bandwidth_slumps(frame)
    return {"streaming": asymptotics.streaming_bandwidth(frame), "streaming_elements": asymptotics.STREAMING_ELEMENTS,
            **({"bandwidth_slumps": slumps} if slumps is not None else {})}


def _other_copy_readings(row: dict) -> str:
    out = ""
    if row.get("share_now_median") is not None:
        out += (f"; {row['share_now_median'] * 100:.0f}% of the copy bandwidth measured right after each point "
                f"(median of {row['points_now']})")
    if row.get("share_best_median") is not None and row.get("copy_best", 0) > row["copy_bytes_per_s"] * 1.005:
        out += (f"; {row['share_best_median'] * 100:.0f}% of the best copy the run measured at this thread count "
                f"({si(row['copy_best'], 'B/s')})")
    return out


def _matching(r: dict) -> str:
    """'; 80% of the read/write roof matching its traffic (read 25.0 GB/s + write 26.7 GB/s, non-temporal)'."""
    m = r.get("matching")
    if not m:
        return ""
    method = f", {m['write_method']} stores" if m.get("write_method") else ""
    text = (f"; {m['share_median'] * 100:.0f}% of the roof matching its reads and writes (read "
            f"{si(m['read_bytes_per_s'], 'B/s')} + write {si(m['write_bytes_per_s'], 'B/s')}{method}; "
            f"{m['share_min'] * 100:.0f}–{m['share_max'] * 100:.0f}%)")
    if m.get("share_best_median") is not None:
        text += f", {m['share_best_median'] * 100:.0f}% of the best read and write readings"
    return text


def conclusions(s: dict) -> list[str]:
    out = []
    for r in s.get("streaming", []):
        gemm = (f"; best {r['flops_share_of_gemm'] * 100:.1f}% of the {r.get('dtype', '')} GEMM roof "
                f"{si(r['gemm_flops_per_s'], 'FLOP/s')}") if r["flops_share_of_gemm"] is not None else ""
        out.append(f"- {r['impl']} ({slice_of(r)}) at B·N·D >= 2^{int(math.log2(s['streaming_elements']))} "
                   f"(N = {', '.join(map(count, r['n_values']))}): bytes_min / time = {r['share_median'] * 100:.0f}% "
                   f"of the same run's copy bandwidth {si(r['copy_bytes_per_s'], 'B/s')} (median of {r['points']}; "
                   f"{r['share_min'] * 100:.0f}–{r['share_max'] * 100:.0f}%){_other_copy_readings(r)}"
                   f"{_matching(r)}{gemm}.")
    return out


def tables(s: dict) -> list[str]:
    rows = s.get("streaming", [])
    same_time = any(x.get("share_now_median") is not None for x in rows)
    matching = any(x.get("matching") for x in rows)
    return titled("Share of the roofs at B·N·D >= 2^25", [
        {"slice": slice_of(r), "impl": r["impl"], "N": ", ".join(map(count, r["n_values"])),
         **({"reads / read roof + writes / write roof, over time (median, min-max)":
             f"{r['matching']['share_median']:.3f} ({r['matching']['share_min']:.3f}-"
             f"{r['matching']['share_max']:.3f})" if r.get("matching") else "-"} if matching else {}),
         "bytes_min / time / copy (median, min-max)":
         f"{r['share_median']:.3f} ({r['share_min']:.3f}-{r['share_max']:.3f})",
         **({"/ same-time copy (median)": short(r.get("share_now_median"))} if same_time else {}),
         "copy bandwidth": si(r["copy_bytes_per_s"], "B/s"), "GEMM roof": si(r["gemm_flops_per_s"], "FLOP/s"),
         "best FLOP/s / GEMM": short(r["flops_share_of_gemm"])} for r in rows])


def caveats(s: dict) -> list[str]:
    """The caveat on points timed while the host's memory bandwidth sagged (measure/bandwidth.py)."""
    slumps = s.get("bandwidth_slumps")
    if slumps is None:
        return []
    if not slumps["points"]:
        return [f"- Memory bandwidth during the run: the copy bandwidth measured right after each of the "
                f"{slumps['checked']} timed points past the LLC stayed above {slumps['share']:.0%} of the run's."]
    named = "; ".join(f"{p['impl']} ({slice_of(p)}) N = {p['seq_len']} D = {p['width']} B = {p['batch']}: "
                      f"{si(p['copy_now'], 'B/s')} of {si(p['copy_run'], 'B/s')}" for p in slumps["points"])
    return [f"- Memory-bandwidth slumps: {len(slumps['points'])} of {slumps['checked']} timed points past the LLC "
            f"were timed while the copy bandwidth measured right after them was below {slumps['share']:.0%} of "
            f"the run's (another tenant of the host streaming memory; no CPU time was taken, so the contention "
            f"check cannot see it): their times are slower than the code, read them against the same-time "
            f"figure. {named}."]
