"""The gate's statistics: is a candidate slower than its baseline, on raw samples or on instruction counts?

Wall time (asv's rule): a point regresses only when the ratio of medians (candidate / baseline) exceeds the
threshold AND a one-sided Mann–Whitney U test says the candidate's samples are larger. The threshold alone
would flag noise at small sample counts; the test alone would flag real but negligible changes.
The interval shown beside the ratio is a percentile bootstrap of the ratio of medians (each side resampled on
its own), with a fixed seed so a report is reproducible from its samples.
Instruction counts are deterministic, so a plain relative threshold is the whole rule.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_THRESHOLD = 1.10
DEFAULT_ALPHA = 0.05
DEFAULT_INSTRUCTION_PERCENT = 1.0

REGRESSION = "regression"
FASTER = "faster"
SAME = "same"


@dataclass(frozen=True)
class Comparison:
    ratio: float  # candidate / baseline (median time, or instruction count)
    ci_low: float | None  # 95 % interval of the ratio (None where it does not apply)
    ci_high: float | None
    p_value: float | None  # one-sided Mann–Whitney U, candidate > baseline
    verdict: str  # REGRESSION | FASTER | SAME

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


def compare_samples(baseline: list[float], candidate: list[float], threshold: float = DEFAULT_THRESHOLD,
                    alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Compare raw per-call times of one point (seconds)."""
    if not baseline or not candidate:
        raise ValueError("both sides need at least one sample to be compared.")
    if threshold < 1:
        raise ValueError(f"the threshold is a ratio >= 1, got {threshold}.")
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    ratio = float(np.median(cand) / np.median(base))
    slower = float(stats.mannwhitneyu(cand, base, alternative="greater").pvalue)
    faster = float(stats.mannwhitneyu(cand, base, alternative="less").pvalue)
    low, high = ratio_interval(baseline, candidate)
    if ratio > threshold and slower < alpha:
        verdict = REGRESSION
    elif ratio < 1 / threshold and faster < alpha:
        verdict = FASTER
    else:
        verdict = SAME
    return Comparison(ratio=ratio, ci_low=low, ci_high=high, p_value=slower, verdict=verdict)


def compare_counts(baseline: float, candidate: float,
                   percent: float = DEFAULT_INSTRUCTION_PERCENT) -> Comparison:
    """Compare instruction counts: a regression when the candidate executes more than ``percent`` % more."""
    if baseline <= 0:
        raise ValueError(f"a baseline instruction count must be positive, got {baseline}.")
    ratio = candidate / baseline
    limit = 1 + percent / 100
    verdict = REGRESSION if ratio > limit else FASTER if ratio < 1 / limit else SAME
    return Comparison(ratio=ratio, ci_low=None, ci_high=None, p_value=None, verdict=verdict)
