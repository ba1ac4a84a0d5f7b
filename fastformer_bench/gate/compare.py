"""Pair the baseline's and the candidate's points and give each pair a verdict (one table row).

Correctness before speed: a point that is not ``ok`` on either side is reported, never compared; an incorrect
candidate point, or a candidate point that fails (error, crash, timeout, oom) where the baseline's ran, fails
the gate like a regression does.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from fastformer_bench import axes
from fastformer_bench.gate.stats import (
    DEFAULT_ALPHA,
    DEFAULT_INSTRUCTION_PERCENT,
    DEFAULT_MARGIN,
    MIN_PAIRED_ROUNDS,
    REGRESSION,
    SAME,
    compare_counts,
    flagged_from,
    measure_rounds,
    measure_samples,
    settle,
)

#: the parameters that make two records "the same point" (run_id, point_id, threads, device name differ by run)
KEY_FIELDS = axes.NAMES
_IMPL = KEY_FIELDS.index("impl")  # where a key holds its implementation (pairs compare across implementations)
INCORRECT, BROKEN, NOT_COMPARED = "incorrect", "broken", "not compared"


@dataclass
class Side:
    """One point as one side measured it: its samples pooled over rounds, and kept by round (A/B pairs them)."""

    label: str
    status: str
    reason: str | None = None
    samples: tuple[float, ...] = ()
    count: float | None = None  # instructions per call (instruction mode): the mean over layouts
    layout_counts: tuple[float, ...] = ()  # the count under each memory layout, in layout order
    rounds: tuple[tuple[float, ...], ...] = ()  # the samples of each round, in round order
    #: per round, whether this side's process was started first (A/B; None where the record does not say)
    started_first: tuple[bool | None, ...] = ()


@dataclass
class Row:
    label: str
    baseline: float | None  # median seconds per call, or instructions per call
    candidate: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    #: the one-sided p-value adjusted across the gate's points (Benjamini-Hochberg); None where not tested
    q_value: float | None
    verdict: str
    note: str = ""
    #: time rows: the slowdown this point's noise lets the rule flag about half the time (stats.flagged_from)
    flagged_from: float | None = None
    #: paired rounds: each round's ratio of medians, in round order (what the interval was computed from)
    round_ratios: tuple[float, ...] | None = None

    @property
    def fails(self) -> bool:
        return self.verdict in (REGRESSION, INCORRECT, BROKEN)


def point_key(record: dict, rename: dict[str, str] | None = None) -> tuple:
    """The pairing key; ``rename`` maps a candidate implementation to the baseline one it is compared with."""
    values = {name: record.get(name) for name in KEY_FIELDS}
    values["impl"] = (rename or {}).get(values["impl"], values["impl"])
    return (*(values[name] for name in KEY_FIELDS), record.get("pair"))


def pair_key(base_impl: str, cand_impl: str) -> str:
    """What keeps one (baseline, candidate) pairing's records apart from another's on either side: by the
    candidate alone, --impl a,x --candidate-impl b,b would file both pairings' candidate records under one key."""
    return f"{base_impl}>{cand_impl}"


def point_label(record: dict) -> str:
    extra = "" if record.get("scope", "core") == "core" else f" {record['scope']}"
    masked = " masked" if record.get("masked") else ""
    return (f"{record['impl']} {record['device']} {record['dtype']} {record['mode']}{extra} B={record['batch']} "
            f"N={record['seq_len']} D={record['width']} H={record['heads']} C={record['columns']}{masked}")


def pool(rounds: Iterable[Iterable[dict]], rename: dict[str, str] | None = None) -> dict[tuple, Side]:
    """Merge records of several rounds per point: samples concatenated; one failing round fails the point."""
    pooled: dict[tuple, Side] = {}
    for records in rounds:
        for record in records:
            key = point_key(record, rename)
            side = pooled.setdefault(key, Side(label=point_label(record), status="ok"))
            if record["status"] != "ok":
                if side.status == "ok":
                    side.status, side.reason = record["status"], record.get("reason")
                continue
            side.samples = side.samples + tuple(record.get("samples") or ())
            side.rounds = side.rounds + (tuple(record.get("samples") or ()),)
            side.started_first = side.started_first + (record.get("started_first"),)
            if record.get("instructions") is not None:
                side.count = record["instructions"]
                side.layout_counts = tuple(record.get("instruction_layouts") or ())
    return pooled


def _not_compared(base: Side | None, cand: Side | None) -> Row:
    label = (cand or base).label
    if cand is None:
        # A point the baseline measured and the candidate lost is a failure, not a silent skip.
        verdict = BROKEN if base.status == "ok" else NOT_COMPARED
        return Row(label, None, None, None, None, None, None, verdict, "missing from the candidate")
    if base is None:
        return Row(label, None, None, None, None, None, None, NOT_COMPARED, "missing from the baseline")
    if cand.status == "incorrect":
        return Row(label, None, None, None, None, None, None, INCORRECT, f"candidate: {cand.reason}")
    if cand.status not in ("ok", "contended", "noisy") and base.status == "ok":
        # contended and noisy say nothing about the code (another task held the CPU; the GPU's samples scattered):
        # reported, neither passed nor failed
        return Row(label, None, None, None, None, None, None, BROKEN, f"candidate {cand.status}: {cand.reason}")
    which = "candidate" if cand.status != "ok" else "baseline"
    side = cand if cand.status != "ok" else base
    return Row(label, None, None, None, None, None, None, NOT_COMPARED, f"{which} {side.status}: {side.reason}")


def _matches(baseline: dict, candidate: dict, pairs: list[tuple[str, str]] | None) -> list[tuple]:
    """(baseline key or None, candidate key or None) for every point to report."""
    if pairs is None:
        return [(k, k if k in candidate else None) for k in baseline] + [(None, k) for k in candidate
                                                                         if k not in baseline]
    found, used = [], set()
    for base_impl, cand_impl in pairs:
        for key in baseline:
            if key[_IMPL] == base_impl and key[-1] in (None, pair_key(base_impl, cand_impl)):
                cand_key = (*key[:_IMPL], cand_impl, *key[_IMPL + 1:])
                found.append((key, cand_key if cand_key in candidate else None))
                used.add(cand_key)
    return found + [(None, k) for k in candidate if k not in used]


def compare(baseline: dict[tuple, Side], candidate: dict[tuple, Side], *,
            pairs: list[tuple[str, str]] | None = None, instructions: bool = False,
            margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA,
            percent: float = DEFAULT_INSTRUCTION_PERCENT) -> list[Row]:
    """One row per point, baseline order first; ``pairs`` (baseline impl, candidate impl) compares across impls.

    Time verdicts are settled together: the false-discovery rate is controlled across the compared points.
    """
    rows: list[Row | None] = []
    timed: list[tuple[int, Side, Side]] = []
    for base_key, cand_key in _matches(baseline, candidate, pairs):
        base, cand = baseline.get(base_key), candidate.get(cand_key)
        if base is None or cand is None or base.status != "ok" or cand.status != "ok":
            rows.append(_not_compared(base, cand))
        elif instructions:
            result = compare_counts(base.count, cand.count, percent)
            rows.append(Row(_label(base, cand), base.count, cand.count, result.ratio, None, None, None,
                            result.verdict, _layout_note(base, cand)))
        else:
            timed.append((len(rows), base, cand))
            rows.append(None)  # filled in once every timed point is known
    measured = [(at, base, cand, _measure(base, cand)) for at, base, cand in timed]
    for at, base, cand, result in measured:
        if result.ratio is None:
            rows[at] = Row(_label(base, cand), None, None, None, None, None, None, NOT_COMPARED,
                           "a median of zero seconds per call: no ratio")
    measured = [m for m in measured if m[3].ratio is not None]
    settled = settle([result for *_, result in measured], margin, alpha)
    for (at, base, cand, _), result in zip(measured, settled):
        how = (f"{len(base.rounds)} paired rounds" if result.round_ratios is not None
               else f"{len(base.samples)} vs {len(cand.samples)} samples")
        rows[at] = Row(_label(base, cand), statistics.median(base.samples), statistics.median(cand.samples),
                       result.ratio, result.ci_low, result.ci_high, result.q_value, result.verdict,
                       f"{how}; p = {result.p_value:.2g}", flagged_from(result.ratio, result.ci_low, margin),
                       result.round_ratios)
    return rows


def undecided(row: Row, margin: float = DEFAULT_MARGIN) -> bool:
    """A time row the rule could not settle: measured slower than 1 + margin, yet not flagged (its interval
    reaches below the margin, or its q-value is too high). More rounds decide it (modes.wall_ab's follow-up)."""
    return row.verdict == SAME and row.ratio is not None and row.ratio > 1 + margin


def row_label(base_record: dict, cand_record: dict) -> str:
    """The label compare() gives the row of these two records' point."""
    return _label(Side(point_label(base_record), "ok"), Side(point_label(cand_record), "ok"))


def paired(base: Side, cand: Side) -> bool:
    """Whether the two sides were measured in paired rounds enough to be compared round by round."""
    return len(base.rounds) == len(cand.rounds) >= MIN_PAIRED_ROUNDS and all(base.rounds) and all(cand.rounds)


def _measure(base: Side, cand: Side):
    if paired(base, cand):
        order = cand.started_first if None not in cand.started_first else None
        return measure_rounds([list(r) for r in base.rounds], [list(r) for r in cand.rounds],
                              candidate_first=order)
    return measure_samples(list(base.samples), list(cand.samples))


def _layout_note(base: Side, cand: Side) -> str:
    """How far the layouts moved the ratio: the spread a count difference must clear to mean something."""
    if len(base.layout_counts) < 2 or len(base.layout_counts) != len(cand.layout_counts):
        return ""
    ratios = [c / b for b, c in zip(base.layout_counts, cand.layout_counts)]
    return f"ratio per layout {min(ratios):.4f}–{max(ratios):.4f} ({len(ratios)} layouts)"


def _label(base: Side, cand: Side) -> str:
    return base.label if cand.label == base.label else f"{base.label} vs {cand.label.split()[0]}"
