"""Any two stored runs point by point: what ``fastformer-bench compare A B`` shows (commands/compare.py).

Every piece is the stored-baseline gate's (docs/gate.md §4): the point identity (compare.point_key), the
contention rule (stored.without_contended), the fingerprint and the copy bandwidth (stored.py), the normalisation
of memory-bound points (stored.normalized) and the pooled-sample estimate: the ratio of medians with its
percentile-bootstrap interval and the verdicts settled together (stats.measure_samples, stats.settle). Where the
gate refuses two runs measured on other hardware or in another machine state, a comparison says so in a banner
and goes on: it reports, it does not gate.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastformer_bench import axes
from fastformer_bench.gate import compare, stats, stored
from fastformer_bench.results import PROBE

#: the point's axes compare.point_label does not name: the thread count, the seed and any axis of a later role
_UNLABELLED = [name for name in compare.KEY_FIELDS if name == "threads" or axes.get(name).role not in (
    axes.IMPLEMENTATION, axes.SLICE, axes.LENGTH, axes.SHAPE)]
#: the gate's verdicts in a report's words: between any two runs a slowdown is a finding, not a failure
VERDICTS = {stats.REGRESSION: "slower", stats.FASTER: "faster", stats.SAME: "same"}


@dataclass(frozen=True)
class Point:
    """One point both runs hold: its times, B/A ratio and interval where both are ok, else their statuses."""

    label: str
    axes: dict
    status_a: str
    status_b: str
    reason_a: str | None = None
    reason_b: str | None = None
    median_a: float | None = None  # seconds per call
    median_b: float | None = None
    samples_a: int = 0
    samples_b: int = 0
    ratio: float | None = None  # median B / median A
    ci_low: float | None = None  # 95 % percentile-bootstrap interval of the ratio
    ci_high: float | None = None
    q_value: float | None = None  # the one-sided "B slower" test, adjusted across the compared points
    verdict: str | None = None  # the gate's rule (interval beyond 1 +- margin, q < alpha): slower, faster or same
    note: str = ""
    scaled: bool = False  # B's samples scaled by the copy-bandwidth ratio (--normalize)


@dataclass
class RunComparison:
    """Two runs compared: the matched points (largest slowdown first), those only one run holds, and what differs
    between the runs themselves (banner)."""

    a: dict  # path, run_id, git_commit, started_at, copy_bytes_per_s per device, fingerprint
    b: dict
    points: list[Point]
    only_a: list[str]
    only_b: list[str]
    banner: list[str] = field(default_factory=list)
    normalized: bool = False
    bandwidth_ratios: dict[str, float] = field(default_factory=dict)  # B / A copy bandwidth per device

    @property
    def compared(self) -> list[Point]:
        return [p for p in self.points if p.ratio is not None]


def _load(directory: str | Path) -> tuple[dict, list[dict]]:
    run, records = stored.load(directory)
    timed = [r for r in records if r.get("kind") != PROBE]
    if not timed:
        raise ValueError(f"{directory} holds no timed points (a probe's results have no times to compare).")
    return run, timed


def _run_facts(directory: str | Path, run: dict, records: list[dict], devices: set[str]) -> dict:
    bandwidths = {d: stored.copy_bandwidth(run, d) for d in sorted(devices)}
    return {"path": str(directory), "run_id": run.get("run_id"), "git_commit": run.get("git_commit"),
            "started_at": run.get("started_at"), "fingerprint": stored.fingerprint(run, records),
            "hardware": stored.cpu_hardware(run, records),
            "copy_bytes_per_s": {d: bw for d, bw in bandwidths.items() if bw is not None}}


def _banner(a: dict, b: dict, ratios: dict[str, float], normalize: bool) -> list[str]:
    """One line per way the two runs are not comparable as they are: the gate's refusals, as warnings."""
    lines = []
    diff = stored.differences(a["fingerprint"], b["fingerprint"])
    diff += stored.hardware_differences(a.get("hardware", {}), b.get("hardware", {}))
    if diff:
        lines.append(f"measured on other hardware or software (A vs B: {'; '.join(diff)}): the ratios compare "
                     "the machines as much as the code")
    for device in sorted(set(a["copy_bytes_per_s"]) | set(b["copy_bytes_per_s"])):
        bw_a, bw_b = a["copy_bytes_per_s"].get(device), b["copy_bytes_per_s"].get(device)
        if bw_a is None or bw_b is None:
            lines.append(f"{device} copy bandwidth known for {'A' if bw_b is None else 'B'} only: memory-bound "
                         "ratios may carry a machine-state difference that --normalize cannot scale away")
        elif abs(ratios[device] - 1) > stored.BANDWIDTH_TOLERANCE:
            then = ("B's memory-bound (linear) points scaled to A's bandwidth (--normalize)" if normalize else
                    "memory-bound (linear) ratios carry it; --normalize scales them")
            lines.append(f"{device} copy bandwidth {bw_a / 1e9:.3g} GB/s in A vs {bw_b / 1e9:.3g} GB/s in B "
                         f"(B/A {ratios[device]:.3g}, more than {stored.BANDWIDTH_TOLERANCE:.0%} apart): {then}")
    return lines


def _label(key: tuple, side: compare.Side) -> str:
    """compare.point_label and the axes it leaves out: a run may hold the same shape at 1 and 2 threads (or a
    CUDA point under two timing methods), and two rows must not read alike."""
    values = dict(zip(compare.KEY_FIELDS, key))
    extra = [f"{name}={values[name]}" for name in _UNLABELLED
             if values[name] is not None and (name == "threads" or values[name] != axes.get(name).default)]
    return " ".join([side.label, *extra])


def _order(key: tuple) -> tuple:
    """A point key as a sort key: axis by axis, numbers as numbers (N=16384 before N=196608), a missing value last."""
    return tuple((value is None, 0 if value is None else value) for value in key)


def _statuses(key: tuple, a: compare.Side, b: compare.Side, note: str = "") -> Point:
    return Point(_label(key, a), dict(zip(compare.KEY_FIELDS, key)), a.status, b.status, a.reason, b.reason,
                 statistics.median(a.samples) if a.status == "ok" and a.samples else None,
                 statistics.median(b.samples) if b.status == "ok" and b.samples else None,
                 len(a.samples), len(b.samples), note=note)


def compare_runs(dir_a: str | Path, dir_b: str | Path, normalize: bool = False) -> RunComparison:
    """Every point of run B against the same point of run A (ValueError, exit 2, for a directory that holds no
    results or two runs that share no point); ``normalize`` scales B's memory-bound points to A's bandwidth."""
    run_a, records_a = _load(dir_a)
    run_b, records_b = _load(dir_b)
    devices = {r["device"] for r in records_a + records_b}
    # never refuses (normalize=True): a comparison reports the gap in the banner instead
    ratios = stored.bandwidth_ratios(dir_a, run_a, run_b, devices, normalize=True)
    facts_a, facts_b = _run_facts(dir_a, run_a, records_a, devices), _run_facts(dir_b, run_b, records_b, devices)
    records_a, records_b = stored.without_contended(records_a), stored.without_contended(records_b)
    scaled: set[tuple] = set()
    if normalize:
        unscaled, (records_b, _) = records_b, stored.normalized(records_b, ratios)
        # normalized() returns a scaled record as a new dict and every other one as it was
        scaled = {compare.point_key(new) for old, new in zip(unscaled, records_b) if new is not old}
    pooled_a, pooled_b = compare.pool([records_a]), compare.pool([records_b])
    both = [k for k in pooled_a if k in pooled_b]
    if not both:
        raise ValueError(f"{dir_a} and {dir_b} share no point (none with the same implementation, shape, slice, "
                         "threads and seed); nothing to compare.")
    points, timed = [], []
    for key in both:
        a, b = pooled_a[key], pooled_b[key]
        if a.status != "ok" or b.status != "ok":
            points.append(_statuses(key, a, b))
        elif not a.samples or not b.samples:
            points.append(_statuses(key, a, b, "no samples stored: no ratio"))
        else:
            timed.append((key, stats.measure_samples(list(a.samples), list(b.samples))))
    for key, found in timed:
        if found.ratio is None:
            points.append(_statuses(key, pooled_a[key], pooled_b[key], "a median of zero seconds per call: no ratio"))
    timed = [(key, found) for key, found in timed if found.ratio is not None]
    for (key, _), found in zip(timed, stats.settle([found for _, found in timed])):
        points.append(replace(_statuses(key, pooled_a[key], pooled_b[key]), ratio=found.ratio, ci_low=found.ci_low,
                              ci_high=found.ci_high, q_value=found.q_value, verdict=VERDICTS[found.verdict],
                              scaled=key in scaled))
    # the largest slowdown first; points without a ratio after every compared one
    points.sort(key=lambda p: (p.ratio is None, -(p.ratio or 0.0), _order(tuple(p.axes.values()))))
    return RunComparison(
        a=facts_a, b=facts_b, points=points, banner=_banner(facts_a, facts_b, ratios, normalize),
        only_a=[_label(k, pooled_a[k]) for k in sorted((k for k in pooled_a if k not in pooled_b), key=_order)],
        only_b=[_label(k, pooled_b[k]) for k in sorted((k for k in pooled_b if k not in pooled_a), key=_order)],
        normalized=normalize, bandwidth_ratios=ratios)
