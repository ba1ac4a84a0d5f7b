"""The gate's statistics: is a candidate slower than its baseline, on raw samples or on instruction counts?

Time: a point regresses when the whole 95 % interval of its time ratio (candidate / baseline) lies above
1 + ``margin`` AND a one-sided test says the candidate is slower, at a false-discovery rate of ``alpha`` across
every point of the gate (Benjamini–Hochberg). The interval makes the effect size part of the rule (a point is
flagged only when even the interval's low end is a slowdown worth the name); the adjustment keeps a gate of many
points from flagging noise because one of them had to be unlucky.

Two estimates, by how the samples were taken:
- paired rounds (A/B, ``measure_rounds``): each round is a fresh pair of processes measured side by side, so its
  ratio of medians is one independent observation, with the process's own luck (memory layout, which core's
  caches) in it. The ratio is the geometric mean of the rounds' ratios, the interval and the test Student's t on
  their logarithms; where the records say which side's process each round started first (the order alternates),
  the order is a term of its own: the midpoint of the two orders' means, t on n - 2 degrees of freedom.
  Pooling the rounds' samples instead treats 80 samples from 4 processes as 80 independent
  ones, and the process-to-process part of the noise goes uncounted.
- pooled samples (a stored baseline, or fewer than MIN_PAIRED_ROUNDS rounds, ``measure_samples``): the ratio of
  medians, a percentile bootstrap interval (each side resampled on its own, fixed seed: a verdict is
  reproducible from its samples) and a one-sided Mann–Whitney U test.
Instruction counts are deterministic for one process image; what moves them between images (memory layout)
is averaged out before they get here (instructions.py), so a plain relative threshold on the means is the rule.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

#: the smallest slowdown the interval's low end must exceed: 2 %
DEFAULT_MARGIN = 0.02
#: the false-discovery rate across the gate's points
DEFAULT_ALPHA = 0.05
DEFAULT_INSTRUCTION_PERCENT = 1.0
#: the fewest paired rounds compared round by round (a t interval on two rounds has one degree of freedom)
MIN_PAIRED_ROUNDS = 3

REGRESSION = "regression"
FASTER = "faster"
SAME = "same"


@dataclass(frozen=True)
class Comparison:
    ratio: float  # candidate / baseline (median time, or instruction count)
    ci_low: float | None  # 95 % interval of the ratio (None where it does not apply)
    ci_high: float | None
    p_value: float | None  # one-sided test (t over paired rounds, or Mann–Whitney U), candidate > baseline
    verdict: str  # REGRESSION | FASTER | SAME
    p_faster: float | None = None  # the same test, candidate < baseline
    q_value: float | None = None  # p_value adjusted across the gate's points (Benjamini–Hochberg)
    round_ratios: tuple[float, ...] | None = None  # paired rounds: each round's ratio of medians, in round order

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSION


def _ratio_of_medians(candidate: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(candidate, axis=axis) / np.median(baseline, axis=axis)


def ratio_interval(baseline: list[float], candidate: list[float], confidence: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval of median(candidate) / median(baseline); (None, None) when undefined."""
    if len(baseline) < 2 or len(candidate) < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical samples: scipy warns and returns nan, reported as None
        result = stats.bootstrap((np.asarray(candidate), np.asarray(baseline)), _ratio_of_medians, paired=False,
                                 vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                                 method="percentile", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None, None
    return low, high


def compare_samples(baseline: list[float], candidate: list[float], margin: float = DEFAULT_MARGIN,
                    alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Compare raw per-call times of one point (seconds) on their own (a gate of one point; see settle)."""
    return settle([measure_samples(baseline, candidate)], margin, alpha)[0]


#: a point with a zero median on either side: no ratio to speak of, so it is reported as not compared
NO_RATIO = Comparison(ratio=None, ci_low=None, ci_high=None, p_value=None, verdict=SAME)


def measure_samples(baseline: list[float], candidate: list[float]) -> Comparison:
    """Ratio, interval and both one-sided p-values of one point; its verdict waits for settle()."""
    if not baseline or not candidate:
        raise ValueError("both sides need at least one sample to be compared.")
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if not (np.median(base) > 0 and np.median(cand) > 0):
        return NO_RATIO
    ratio = float(np.median(cand) / np.median(base))
    slower = float(stats.mannwhitneyu(cand, base, alternative="greater").pvalue)
    faster = float(stats.mannwhitneyu(cand, base, alternative="less").pvalue)
    low, high = ratio_interval(baseline, candidate)
    return Comparison(ratio=ratio, ci_low=low, ci_high=high, p_value=slower, verdict=SAME, p_faster=faster)


#: the fewest rounds of each start order for the order to be a term of the estimate (else plain t over rounds)
MIN_ROUNDS_PER_ORDER = 2


def _order_term(logs: np.ndarray, candidate_first) -> tuple[float, float, int] | None:
    """(estimate, its standard error, degrees of freedom) of the log ratio with the start order as a term of its
    own: the midpoint of the mean over the rounds the candidate was started first and the mean over the others,
    the error from the rounds' scatter around their own order's mean (n - 2 degrees of freedom). None where an
    order has fewer than MIN_ROUNDS_PER_ORDER rounds.

    Why: the A/B sides start in alternating order, and the side started first ran up to 4 % slower or faster,
    the same way in every round of a gate (eager at N = 4096 on the 2-core VM, 13 self-test gates: counted
    rounds alternated -3.3..-4.0 % / +2.3..+3.5 % around the gate's mean). The alternation cancels in the mean
    but inflated the rounds' SD from 3.0 to 3.9 %, and with it every interval: re-analysed with this term, the
    same rounds caught a 5 % slowdown in 13 of 13 gates instead of 10, with no false alarm."""
    if candidate_first is None or len(candidate_first) != len(logs):
        return None
    first = np.asarray(candidate_first, dtype=bool)
    a, b = logs[first], logs[~first]
    if min(len(a), len(b)) < MIN_ROUNDS_PER_ORDER:
        return None
    resid = np.concatenate([a - a.mean(), b - b.mean()])
    freedom = len(logs) - 2
    scatter = float(resid @ resid) / freedom
    return float((a.mean() + b.mean()) / 2), math.sqrt(scatter * (1 / len(a) + 1 / len(b)) / 4), freedom


def measure_rounds(baseline: list[list[float]], candidate: list[list[float]],
                   confidence: float = 0.95, candidate_first: list[bool] | tuple | None = None) -> Comparison:
    """Ratio, interval and both one-sided p-values of one point measured in paired rounds (round i of each side
    taken side by side); its verdict waits for settle(). ``candidate_first``: per round, whether the candidate's
    process was started first; given, with both orders in at least MIN_ROUNDS_PER_ORDER rounds, the order is a
    term of the estimate (_order_term)."""
    if len(baseline) != len(candidate) or len(baseline) < MIN_PAIRED_ROUNDS:
        raise ValueError(f"paired rounds need the same number of rounds on both sides, at least "
                         f"{MIN_PAIRED_ROUNDS}; got {len(baseline)} and {len(candidate)}.")
    if not all(baseline) or not all(candidate):
        raise ValueError("every round needs at least one sample on both sides to be compared.")
    with np.errstate(all="ignore"):
        per_round = np.array([np.median(c) / np.median(b) for b, c in zip(baseline, candidate)], dtype=float)
        logs = np.log(per_round)
    if not np.isfinite(logs).all():  # a zero (or denormal) median: no ratio to speak of
        return NO_RATIO
    ratio = float(np.exp(logs.mean()))
    found = Comparison(ratio=ratio, ci_low=ratio, ci_high=ratio, p_value=float(ratio <= 1), verdict=SAME,
                       p_faster=float(ratio >= 1), round_ratios=tuple(float(r) for r in per_round))
    if np.ptp(logs) < 1e-12:
        return found  # every round says the same to rounding: no spread, the interval is the ratio itself
    ordered = _order_term(logs, candidate_first)
    if ordered is not None and ordered[1] > 0:
        centre, error, freedom = ordered
        half = float(stats.t.ppf(0.5 + confidence / 2, freedom)) * error
        return replace(found, ratio=math.exp(centre), ci_low=math.exp(centre - half),
                       ci_high=math.exp(centre + half), p_value=float(stats.t.sf(centre / error, freedom)),
                       p_faster=float(stats.t.cdf(centre / error, freedom)))
    interval = stats.ttest_1samp(logs, 0.0).confidence_interval(confidence)
    return replace(found, ci_low=float(np.exp(interval.low)), ci_high=float(np.exp(interval.high)),
                   p_value=float(stats.ttest_1samp(logs, 0.0, alternative="greater").pvalue),
                   p_faster=float(stats.ttest_1samp(logs, 0.0, alternative="less").pvalue))


def settle(found: list[Comparison], margin: float = DEFAULT_MARGIN, alpha: float = DEFAULT_ALPHA) -> list[Comparison]:
    """The verdicts of every point of one gate, the p-values adjusted together (Benjamini–Hochberg)."""
    if not margin >= 0:
        raise ValueError(f"the margin is a fraction >= 0 (0.02 = 2 %), got {margin}.")
    if not found:
        return []
    q_slower = stats.false_discovery_control([c.p_value for c in found], method="bh")
    q_faster = stats.false_discovery_control([c.p_faster for c in found], method="bh")
    settled = []
    for c, slow, fast in zip(found, q_slower, q_faster):
        verdict = SAME
        if c.ci_low is not None and c.ci_low > 1 + margin and slow < alpha:
            verdict = REGRESSION
        elif c.ci_high is not None and c.ci_high < 1 / (1 + margin) and fast < alpha:
            verdict = FASTER
        settled.append(replace(c, verdict=verdict, q_value=float(slow)))
    return settled


def flagged_from(ratio: float | None, ci_low: float | None, margin: float = DEFAULT_MARGIN) -> float | None:
    """The slowdown (time ratio) that this point's noise lets the rule flag about half the time: a true ratio s,
    measured at s with an interval of the same relative width, is flagged once s * (ci_low / ratio) > 1 + margin.
    What a PASS can vouch for: slowdowns below it may have gone unseen. None without an interval."""
    if ratio is None or ci_low is None or not ci_low > 0 or not ratio > 0:
        return None
    return (1 + margin) * ratio / ci_low


def compare_counts(baseline: float, candidate: float,
                   percent: float = DEFAULT_INSTRUCTION_PERCENT) -> Comparison:
    """Compare instruction counts: a regression when the candidate executes more than ``percent`` % more."""
    if baseline <= 0:
        raise ValueError(f"a baseline instruction count must be positive, got {baseline}.")
    ratio = candidate / baseline
    limit = 1 + percent / 100
    verdict = REGRESSION if ratio > limit else FASTER if ratio < 1 / limit else SAME
    return Comparison(ratio=ratio, ci_low=None, ci_high=None, p_value=None, verdict=verdict)
