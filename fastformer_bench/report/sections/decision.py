"""The decision REPORT.md leads with: a three-sentence answer and one table row per setting (report.decision)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from fastformer_bench.report import asymptotics, decision
from fastformer_bench.report.decision import ran_alone, setting, shape
from fastformer_bench.report.fmt import count, pct, si, span, times
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
        # a run of one implementation says so rather than calling it the fastest of one
        role = ("the only additive implementation run" if all(map(ran_alone, rows))
                else "the fastest additive implementation")
        one = f"On {machine}, `{winners[0]}` is {role} in {every} measured ({_settings(rows)})"
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
    return [_timed_with(one, rows), _versus_sentence(rows), _roof_sentence(rows)] + _process_sentence(rows)


def _timed_with(sentence: str, rows: list[dict]) -> str:
    """The first sentence with how its times were taken: one method for every setting, else each setting's."""
    methods = {r.get("timing_method") for r in rows} - {None}
    if not methods:
        return sentence
    if len(methods) == 1:
        (method,) = methods
        clause = f"times are {decision.TIMING_WORDS.get(method, method)}"
    else:
        clause = "times are " + "; ".join(
            f"{decision.TIMING_WORDS.get(r['timing_method'], r['timing_method'])} in {setting(r, device=False)}"
            for r in rows if r.get("timing_method"))
    return f"{sentence[:-1]} ({clause})."


def plain_cell(row: dict) -> str:
    """The fastest in a plain process: '37.5 ms at N = 131,072 (1.43× warm)', with its shape where it differs."""
    plain = row.get("plain")
    if not plain:
        return "not measured"
    text = f"{si(plain['time'], 's')} at N = {count(plain['n'])}"
    if plain.get("width") != row.get("width") or plain.get("batch") != row.get("batch"):
        text += f", B = {plain['batch']}, D = {plain['width']}"
    return text + (f" ({times(plain['ratio_to_warm'])} warm)" if plain.get("ratio_to_warm") is not None else "")


def _process_sentence(rows: list[dict]) -> list[str]:
    """Which allocator condition the decision is read in, and what a plain process gets (CPU settings only)."""
    cpu = [r for r in rows if str(r["device"]).partition("@")[0] == "cpu"]
    if not cpu:
        return []
    text = ("These CPU times are of the harness's kept heap (allocator condition `warm`: glibc told to keep freed "
            "memory, so a call does not page-fault fresh memory)")
    plain = [r for r in cpu if r.get("plain")]
    if not plain:
        return [text + "; the run measured no plain process (`--allocator plain`), which a user's `python` is."]
    parts = [f"{plain_cell(r)} for `{r['fastest']['impl']}` in {setting(r, device=False)}" for r in plain]
    return [text + "; in a plain Python process, what a user's `python` gets: " + "; ".join(parts)
            + " (section What your process gets)."]


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
    with_roof = [r for r in rows if r["roof"]]
    power = int(math.log2(asymptotics.STREAMING_ELEMENTS))
    if not with_roof:
        return (f"No point reached B·N·D ≥ 2^{power} (inputs far past the cache), so the report gives no share of "
                "a memory roof.")
    matching = all(r["roof"].get("matching") for r in with_roof)
    start = [share(r)[0] for r in with_roof]
    best = [b for r in with_roof for b in [share(r)[1]] if b is not None]
    roof = ("the roofs matching its reads and writes (a reduction's read bandwidth, a fill's write bandwidth) the run "
            "measured at its start" if matching else "the copy bandwidth the run measured at its start")
    text = f"Far past the cache (B·N·D ≥ 2^{power}) the fastest reaches {_span(start)} of {roof}"
    if best and best != start:
        text += f" and {_span(best)} of the best readings of the run"
    reasons = _above_reasons(with_roof)
    if reasons:
        text += " (above 100 %: " + "; ".join(reasons) + ")"
    return text + "."


def _above_reasons(rows: list[dict]) -> list[str]:
    """Why shares exceed 100 %, one clause per reason: the settings whose start-of-run roofs read low together."""
    low, other = _above(rows)
    out = []
    if low:
        best = [share(r)[1] for r in low]
        out.append(f"the roofs read at the run's start were low in {_settings(low)}, not the kernel faster than "
                   f"memory (the host's bandwidth moves within a run): against the best readings it is "
                   f"{_span(best)}")
    out += [f"{setting(r, device=False)}: {why}" for r, why in other]
    return out


def _above(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """The rows above 100 % of their start-of-run roofs: those whose start reading was low (against the best readings
    they are not above), and every other with its reason."""
    low = [r for r in rows if _low_start(r)]
    return low, [(r, why) for r in rows if r not in low for why in [above_roof(r)] if why]


def _low_start(row: dict) -> bool:
    """Above 100 % of the start-of-run roofs but not of the best readings: the start's reading was low."""
    start, best = share(row)
    return best is not None and best <= 1 < start


def _span(shares: list[float]) -> str:
    return span(shares, lambda share: pct(share)[:-2], " %")


_NO_ROOF = f"– (no point at B·N·D ≥ 2^{int(math.log2(asymptotics.STREAMING_ELEMENTS))})"


def roof_cell(row: dict) -> str:
    """'80 % of read 25.0 GB/s + write 26.7 GB/s; 72 % of the best readings (at D = 256)' against the roof matching
    the points' reads and writes, else (runs without those roofs) '118 % of 19.7 GB/s; 66 % of the best, 35.4
    GB/s' against the copy roof, or why there is none."""
    roof = row["roof"]
    if not roof:
        return _NO_ROOF
    matching = roof.get("matching")
    if matching:
        text = (f"{pct(matching['share_median'])} of read {si(matching['read_bytes_per_s'], 'B/s')} + write "
                f"{si(matching['write_bytes_per_s'], 'B/s')}")
        best = matching.get("share_best_median")
        if best is not None and pct(best) != pct(matching["share_median"]):
            text += f"; {pct(best)} of the best readings"
    else:
        text = f"{pct(roof['share_median'])} of {si(roof['copy_bytes_per_s'], 'B/s')}"
        if roof.get("share_best_median") is not None and roof["copy_best"] > roof["copy_bytes_per_s"] * 1.005:
            text += f"; {pct(roof['share_best_median'])} of the best, {si(roof['copy_best'], 'B/s')}"
    if roof.get("widths") and roof["widths"] != [row["width"]]:
        text += f" (at D = {', '.join(map(str, roof['widths']))})"
    return text


def share(row: dict) -> tuple[float, float | None]:
    """(start-of-run share, share of the best readings) of the row's roof: the matching one where the run has it."""
    roof = row["roof"]
    matching = roof.get("matching")
    if matching:
        return matching["share_median"], matching.get("share_best_median")
    return roof["share_median"], roof.get("share_best_median")


def above_roof(row: dict) -> str | None:
    """Why the row's share exceeds 100 % of its roof, in one clause, or None where it does not."""
    start, best = share(row)
    if start <= 1:
        return None
    matching = row["roof"].get("matching")
    if best is not None and best <= 1:
        return (f"the roof read at the run's start was low, not the kernel faster than memory (the host's bandwidth "
                f"moves within a run): against the best readings of the run it is {pct(best)}")
    if not matching:
        return "the copy roof counts 2 bytes per byte copied, and a plain copy also reads each destination line"
    if matching.get("write_method") == "plain":
        return ("the write roof was timed with plain stores, each destination line also read for ownership, and "
                "the kernel writes with non-temporal stores, which skip that read")
    overlap = matching.get("share_overlap_median")
    return ("reads and writes overlap: the read and write roofs, each timed alone, do not add up to the least time "
            "of a mix of both" + (f" (against the slower of the two alone it is {pct(overlap)})"
                                  if overlap is not None else ""))


def at_n_cell(v: dict, mark: str = "²") -> str:
    """The speedup over one baseline at SPEEDUP_N with both times, or why there is none."""
    if v.get("speedup") is not None:
        both = f" ({si(v['impl_time'], 's')} vs {si(v['baseline_time'], 's')})" if v.get("impl_time") else ""
        return f"**{times(v['speedup'])}**{both}"
    status = v.get("status_at_n")
    return f"– ({v['baseline']}: {status} {mark})" if status and status != "not measured" else "– (not measured)"


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
             "share of the memory roof ¹": roof_cell(row)}
    cells["in a plain process"] = plain_cell(row) if str(row["device"]).partition("@")[0] == "cpu" else "–"
    for base in bases:
        at_n, largest, tail = versus_cells(row, base)
        cells[f"× {base} at N = {count(asymptotics.SPEEDUP_N)}"] = at_n
        cells[f"× {base} at the largest N both ran"] = largest
        cells[f"vs {base}"] = tail
    return cells


def versus_cells(row: dict, base: str, mark: str = "²") -> tuple[str, str, str]:
    """A row against one baseline: the speedup at SPEEDUP_N, at the largest N both ran, and the crossover."""
    v = next((v for v in row["versus"] if v["baseline"] == base), {"baseline": base})
    if not v.get("measured"):
        return "not measured", "–", "–"
    return at_n_cell(v, mark), largest_cell(v), _tail(v) or "–"


def _said(cells: list[dict]) -> list[dict]:
    """The cells less every column that holds nothing in any row (no setting reached B·N·D ≥ 2^25, none measured a
    baseline at N = 8192): the answer says why in words."""
    nothing = ("–", "– (not measured)", "not measured", _NO_ROOF)
    empty = [k for k in cells[0] if all(c[k] in nothing for c in cells)]
    return [{k: v for k, v in c.items() if k not in empty} for c in cells]


def roof_note(rows: list[dict], name: Callable[[dict], str] | None = None) -> str:
    """Footnote ¹: what the share of the memory roof is, and why any row's exceeds 100 %, one sentence per reason
    naming its rows by ``name`` (by default their settings)."""
    power = int(math.log2(asymptotics.STREAMING_ELEMENTS))
    with_roof = [r for r in rows if r["roof"]]
    several_devices = len({r["device"] for r in with_roof}) > 1
    name = name or (lambda r: setting(r, device=several_devices))
    text = (f"¹ At the points with B·N·D ≥ 2^{power}, median: the time the least traffic of a call takes at the "
            "memory roofs, over its time. Where the run measured read and write roofs, the roof matches the call's "
            "mix: bytes_read_min over the read roof (a reduction) plus bytes_written_min over the write roof (a "
            "fill, non-temporal where the CPU has it); otherwise bytes_min over the copy bandwidth. Each against "
            "the roofs measured at the run's start, and against the best readings of the run (the host's "
            "bandwidth moves within a run).")
    low, other = _above(with_roof)
    if low:
        text += (f" Above 100 % in {'; '.join(name(r) for r in low)}, because the roofs read at the run's start were "
                 f"low, not the kernel faster than memory: against the best readings of the run "
                 f"{'it is' if len(low) == 1 else 'they are'} {_span([share(r)[1] for r in low])}.")
    reasons: dict[str, list[str]] = {}
    for r, why in other:
        reasons.setdefault(why, []).append(name(r))
    text += "".join(f" Above 100 % in {'; '.join(names)}, because {why}." for why, names in reasons.items())
    return text


def footnotes(rows: list[dict]) -> list[str]:
    """What the table's marks mean, each only where some row needs it."""
    if not any(r["roof"] for r in rows):
        return oom_note(rows)
    return [roof_note(rows)] + oom_note(rows)


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
