"""The decision REPORT.md leads with: a three-sentence answer and one table row per setting (report.decision)."""

from __future__ import annotations

import math

import pandas as pd

from fastformer_bench.report import asymptotics, decision
from fastformer_bench.report.decision import setting, shape
from fastformer_bench.report.fmt import count, pct, si, times
from fastformer_bench.report.output import table


def summarize(frame: pd.DataFrame, facts: dict[str, dict]) -> dict:
    return {"decision": decision.decide(frame, facts)}


def _settings(rows: list[dict]) -> str:
    several_devices = len({r["device"] for r in rows}) > 1
    return "; ".join(setting(r, device=several_devices) for r in rows)


def _tail(v: dict, span: bool = True) -> str:
    """How the implementation stands against the baseline over the N both ran, in a few words (and over which N)."""
    low, high = v["matched_n"] or (None, None)
    where = f" (N = {count(low)}–{count(high)})" if span and low is not None else ""
    return {"always_faster": f"faster at every N both ran{where}",
            "crossed": f"faster from N ≈ {count(v['crossover_n'])} on" if v["crossover_n"] else "",
            "never_faster": f"slower at every N both ran{where}",
            "not_staying_faster": f"slower again at the largest N both ran{where}"}.get(v["outcome"] or "", "")


def _phrase(row: dict, v: dict) -> str | None:
    """'786× at N = 8,192 in float32 fwd, 1 thread (1.31 ms vs 1.03 s), faster at every N both ran'."""
    where = setting(row, device=False)
    if v.get("speedup") is not None:
        head = f"{times(v['speedup'])} as fast at N = {count(v['at_n'])} in {where}"
        if v.get("impl_time") is not None:
            head += f" ({si(v['impl_time'], 's')} vs {si(v['baseline_time'], 's')})"
    elif v.get("speedup_at_largest_n") is not None:
        head = (f"{times(v['speedup_at_largest_n'])} as fast at N = {count(v['largest_n'])}, the largest N both ran, "
                f"in {where}")
    else:
        return None
    tail = _tail(v, span=False)
    return f"{head}, {tail}" if tail else head


def answer(s: dict, machine: str) -> list[str]:
    """Three sentences: what to ship, how it fares against the primary softmax baseline, how near the roof."""
    rows = s.get("decision") or []
    if not rows:
        return ["No additive implementation has a timed point in these results, so there is no decision to give."]
    first = next((r for r in rows if r["runner_up"]), rows[0])
    winners = sorted({r["fastest"]["impl"] for r in rows})
    if len(winners) == 1:
        every = "the one setting" if len(rows) == 1 else f"all {len(rows)} settings"
        one = (f"On {machine}, `{winners[0]}` is the fastest additive implementation in {every} measured "
               f"({_settings(rows)})")
        if first["runner_up"]:
            r = first["runner_up"]
            one += (f"; in {setting(first, device=False)} ({shape(first)}) it takes "
                    f"{si(first['fastest']['time'], 's')} at N = {count(first['n'])}, and the runner-up "
                    f"`{r['impl']}` takes {times(r['ratio'])} its time at N = {count(r['n'])}")
        one += "."
    else:
        by = {w: [r for r in rows if r["fastest"]["impl"] == w] for w in winners}
        one = (f"On {machine}, the fastest additive implementation depends on the setting: "
               + "; ".join(f"`{w}` in {_settings(by[w])}" for w in winners) + ".")
    return [one, _versus_sentence(rows), _roof_sentence(rows)]


def _versus_sentence(rows: list[dict]) -> str:
    if not rows[0]["versus"]:
        return "The run measured no softmax baseline, so there is no speedup over softmax attention to give."
    base = rows[0]["versus"][0]["baseline"]
    phrases = [p for r in rows if r["versus"][0].get("measured") for p in [_phrase(r, r["versus"][0])] if p]
    missing = [r for r in rows if not r["versus"][0].get("measured")]
    if not phrases:
        return f"No setting measured {base} beside the additive implementations, so there is no speedup over it."
    text = f"Against {base} the fastest runs " + "; ".join(phrases)
    if missing:
        text += f" ({base} was not measured in {_settings(missing)})"
    return text + "."


def _roof_sentence(rows: list[dict]) -> str:
    roofs = [r["roof"] for r in rows if r["roof"]]
    power = int(math.log2(asymptotics.STREAMING_ELEMENTS))
    if not roofs:
        return (f"No point reached B·N·D ≥ 2^{power} (inputs far past the cache), so the report gives no share of "
                "the copy roof.")
    start = [r["share_median"] for r in roofs]
    best = [r["share_best_median"] for r in roofs if r.get("share_best_median") is not None]
    text = (f"Far past the cache (B·N·D ≥ 2^{power}) the fastest moves {_span(start)} of the copy bandwidth the run "
            "measured at its start")
    if best and best != start:
        text += f" and {_span(best)} of the best copy it measured"
    if max(start) > 1:
        text += " (above 100 %: the start-of-run copy reading was low, not the kernel faster than memory)"
    return text + "."


def _span(shares: list[float]) -> str:
    low, high = min(shares), max(shares)
    return pct(low) if pct(low) == pct(high) else f"{pct(low)[:-2]}–{pct(high)}"


_NO_ROOF = f"– (no point at B·N·D ≥ 2^{int(math.log2(asymptotics.STREAMING_ELEMENTS))})"


def roof_cell(row: dict) -> str:
    """'118 % of 19.7 GB/s; 66 % of the best, 35.4 GB/s (at D = 256, 512)', or why there is none."""
    roof = row["roof"]
    if not roof:
        return _NO_ROOF
    text = f"{pct(roof['share_median'])} of {si(roof['copy_bytes_per_s'], 'B/s')}"
    if roof.get("share_best_median") is not None and roof["copy_best"] > roof["copy_bytes_per_s"] * 1.005:
        text += f"; {pct(roof['share_best_median'])} of the best, {si(roof['copy_best'], 'B/s')}"
    if roof.get("widths") and roof["widths"] != [row["width"]]:
        text += f" (at D = {', '.join(map(str, roof['widths']))})"
    return text


def at_n_cell(v: dict) -> str:
    """The speedup over one baseline at SPEEDUP_N with both times, or why there is none."""
    if v.get("speedup") is not None:
        both = f" ({si(v['impl_time'], 's')} vs {si(v['baseline_time'], 's')})" if v.get("impl_time") else ""
        return f"**{times(v['speedup'])}**{both}"
    status = v.get("status_at_n")
    return f"– ({v['baseline']}: {status} ²)" if status and status != "not measured" else "– (not measured)"


def largest_cell(v: dict) -> str:
    """The speedup over one baseline at the largest N both ran, and which is faster there."""
    if v.get("speedup_at_largest_n") is None:
        return "–"
    text = f"{times(v['speedup_at_largest_n'])} (N = {count(v['largest_n'])})"
    return text + (f": {v['baseline']} is faster" if v["speedup_at_largest_n"] < 1 else "")


def _row(row: dict, bases: list[str]) -> dict:
    fastest, runner = row["fastest"], row["runner_up"]
    cells = {"setting": setting(row), "shape": shape(row),
             "fastest": f"`{fastest['impl']}` {si(fastest['time'], 's')} at N = {count(row['n'])}",
             "runner-up": f"`{runner['impl']}` {times(runner['ratio'])} the time (N = {count(runner['n'])})"
             if runner else "– (one implementation)",
             "share of the copy roof ¹": roof_cell(row)}
    for base in bases:
        at_n, largest, tail = versus_cells(row, base)
        cells[f"× {base} at N = {count(asymptotics.SPEEDUP_N)}"] = at_n
        cells[f"× {base} at the largest N both ran"] = largest
        cells[f"vs {base}"] = tail
    return cells


def versus_cells(row: dict, base: str) -> tuple[str, str, str]:
    """A row against one baseline: the speedup at SPEEDUP_N, at the largest N both ran, and the crossover."""
    v = next((v for v in row["versus"] if v["baseline"] == base), {"baseline": base})
    if not v.get("measured"):
        return "not measured", "–", "–"
    return at_n_cell(v), largest_cell(v), _tail(v) or "–"


def _said(cells: list[dict]) -> list[dict]:
    """The cells less every column that holds nothing in any row (no setting reached B·N·D ≥ 2^25, none measured a
    baseline at N = 8192): the answer says why in words."""
    nothing = ("–", "– (not measured)", "not measured", _NO_ROOF)
    empty = [k for k in cells[0] if all(c[k] in nothing for c in cells)]
    return [{k: v for k, v in c.items() if k not in empty} for c in cells]


def footnotes(rows: list[dict]) -> list[str]:
    """What the table's marks mean, each only where some row needs it."""
    power = int(math.log2(asymptotics.STREAMING_ELEMENTS))
    if not any(r["roof"] for r in rows):
        return oom_note(rows)
    out = [f"¹ bytes_min / time (the least traffic a call can make, over its time) at the points with "
           f"B·N·D ≥ 2^{power}, median, against the copy bandwidth the run measured at its start, and against the "
           "best copy it measured at any time (the host's bandwidth moves within a run)."]
    if any(r["roof"] and r["roof"]["share_median"] > 1 for r in rows):
        out[0] += (" Above 100 % means the start-of-run copy reading was low, not that the kernel beat memory: the "
                   "share of the best copy is the one no reading of the run contradicts.")
    return out + oom_note(rows)


def oom_note(rows: list[dict]) -> list[str]:
    """Footnote ² on a baseline that has no time at N = 8192 because it failed there."""
    out = []
    odd = sorted({(v["baseline"], v["status_at_n"]) for r in rows for v in r["versus"]
                  if v.get("status_at_n") not in (None, "not measured")})
    if odd:
        out.append("² No time at N = " + count(asymptotics.SPEEDUP_N) + " at this shape: " + "; ".join(
            f"the run recorded {base} as {status} there" for base, status in odd) + ".")
    return out


def section(s: dict, headline: list[dict]) -> list[str]:
    """The Decision section: the table, its footnotes, and the headline figures."""
    rows = s.get("decision") or []
    if not rows:
        return []
    bases = list(s.get("baselines") or [])
    out = ["## Decision", "",
           "Per setting, read at the shape where the additive implementations met the softmax baselines at the most "
           "N: the fastest additive implementation at the largest N it ran, the runner-up at the largest N both ran, "
           "and the fastest against each baseline.", "", table(_said([_row(r, bases) for r in rows])), ""]
    out += [line for note in footnotes(rows) for line in (note, "")]
    for e in headline:
        alt = (e["title"] or "").replace("\n", "; ")
        out += [f"_Skipped: {e['skipped']}._" if e["file"] is None else f"![{alt}]({e['file']})", ""]
    return out
