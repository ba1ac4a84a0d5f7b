"""Theory beside measurement: how much of MQAR a mixer that passes one pooled vector per column can recall.

Additive attention pools each column into one global vector per head ([design.md](design.md) §1.3): a token
learns about the others only through that sum. The assumption here is that such a sum carries about one
key–value pair of MQAR. At a query whose pair is the one carried (1 in p) the value is recalled; at any other
(p − 1 in p) the model can only guess among the V values, so at best

    ceiling(p, V) = (1 + (p − 1) / V) / p.

V is the number of values the task draws from, not the whole vocabulary: the generator
(``probe.tasks.mqar``) keeps token 0 as filler, keys 1..K with K = ⌊(vocab − 1) / 2⌋, and values
K + 1..vocab − 1, so V = vocab − 1 − ⌊(vocab − 1) / 2⌋ (32 for vocab 64, 65 for vocab 130); chance is 1 / V.

Only conclusive cells (probe_cells: the control learned the cell) are placed against the ceiling in words; an
inconclusive cell's additive accuracy says what the budget allowed, so it is named as such and greyed.
"""

from __future__ import annotations

from fastformer_bench.report.fmt import count
from fastformer_bench.report.probe_decision import pct1


def values(vocab: int) -> int:
    """The number of values MQAR draws from at this vocabulary (the generator's split: keys get the lower half)."""
    return vocab - 1 - (vocab - 1) // 2


def ceiling(pairs: int, value_count: int) -> float:
    """The accuracy of recalling one pair of ``pairs`` and guessing among ``value_count`` values for the rest."""
    return (1 + (pairs - 1) / value_count) / pairs


def verdict(mean: float, low: float, high: float, bound: float) -> str:
    """'agrees' where the ceiling lies within the seeds' range, else 'above' or 'below' (the measurement)."""
    return "agrees" if low <= bound <= high else "above" if mean > bound else "below"


def cells(accuracy: list[dict]) -> list[dict]:
    """Every additive MQAR cell of the summary's accuracy table with its ceiling and where it sits against it."""
    found = []
    for r in accuracy:
        if r["task"] != "mqar" or r["mixer"] != "additive":
            continue
        v = values(int(r["vocab"]))
        bound = ceiling(int(r["pairs"]), v)
        found.append({**{k: r[k] for k in ("columns", "seq_len", "width", "pairs", "vocab", "steps")},
                      "values": v, "ceiling": bound, "additive": r["mean"],
                      "additive_range": [r["low"], r["high"]], "seeds": r["seeds"],
                      "verdict": verdict(r["mean"], r["low"], r["high"], bound),
                      "conclusive": r.get("conclusive") is None or bool(r["conclusive"])})
    return found


def _cell(c: dict) -> str:
    return (f"N = {count(c['seq_len'])}, width {c['width']}, C = {c['columns']}, {c['pairs']} pairs, "
            f"{count(c['steps'])} steps ({pct1(c['additive'])} against {pct1(c['ceiling'])})")


def sentences(found: list[dict]) -> list[str]:
    """Where the measurement agrees with the ceiling, where it sits above or below it, and what that means."""
    if not found:
        return []
    told = [c for c in found if c.get("conclusive", True)]
    groups = {v: [c for c in told if c["verdict"] == v] for v in ("agrees", "above", "below")}
    vs = sorted({(c["vocab"], c["values"]) for c in found})
    lines = ["V here is the number of values, not the vocabulary: "
             + "; ".join(f"vocabulary {vocab} gives V = {v}" for vocab, v in vs) + "."]
    if groups["agrees"]:
        lines.append("The ceiling lies within the seeds' range at " + "; ".join(map(_cell, groups["agrees"]))
                     + ": there additive attention recalls about one pair and guesses the rest, as one pooled vector "
                     "per column predicts.")
    else:
        lines.append(f"At no {'conclusive ' if len(told) < len(found) else ''}cell does the ceiling lie within the "
                     "seeds' range.")
    if groups["above"]:
        lines.append("Above it at " + "; ".join(map(_cell, groups["above"])) + ": more than one pair's worth "
                     "gets through (the models hold several pooled vectors, one per layer, column and head), so the "
                     "one-pair assumption understates additive attention there, though not by much.")
    if groups["below"]:
        lines.append(f"Below it at {len(groups['below'])} of {len(told)} cells (the table's \"below\"): there the "
                     "model has not learned to carry even one pair within the budget or at that width, so the gap to "
                     "softmax there is partly the training's, not only the pooling's.")
    if len(told) < len(found):
        lines.append(f"{len(found) - len(told)} of {len(found)} cells are inconclusive (the table's "
                     "\"inconclusive\", greyed in the figures): softmax attention did not learn them within the "
                     "budget, so their additive accuracy is not set against the ceiling.")
    return lines


def table_rows(found: list[dict]) -> list[dict]:
    return [{"N": count(c["seq_len"]), "D": c["width"], "C": c["columns"], "pairs": c["pairs"],
             "steps": count(c["steps"]), "V": c["values"],
             "additive": f"{pct1(c['additive'])} [{pct1(c['additive_range'][0])}–{pct1(c['additive_range'][1])}]",
             "ceiling": pct1(c["ceiling"]),
             "measured vs ceiling": c["verdict"] if c.get("conclusive", True) else "inconclusive"} for c in found]


def section(found: list[dict]) -> list[str]:
    """The report's section: the assumption, the table, the sentences."""
    from fastformer_bench.report import output

    if not found:
        return []
    return ["## MQAR: theory beside measurement", "",
            "Additive attention passes one pooled vector per column and head between tokens. If that vector carries "
            "about one key–value pair, the query of that pair is recalled and every other query is a guess among the "
            "V values: accuracy at most (1 + (p − 1)/V)/p for p pairs ([probe.md](../../docs/probe.md) §5.1). "
            "\"agrees\": the ceiling lies within the seeds' range [lowest–highest].", "",
            output.table(table_rows(found)), "", *(f"- {line}" for line in sentences(found)), ""]
