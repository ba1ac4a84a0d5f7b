"""Outliers are not steps: a one-commit excursion is listed with its ratio, a sustained shift is a step, and noise
alone is neither (history/trend.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fastformer_bench import history

COMMITS = [f"{i:040x}" for i in range(24)]


def _noisy(rng: np.random.Generator, n: int = 24, noise: float = 0.01) -> list[float]:
    return (1e-3 * np.exp(rng.normal(0, noise, n))).tolist()


@pytest.mark.parametrize("seed", range(5))
def test_a_one_commit_spike_of_1_9x_is_an_outlier_not_a_step(seed):
    values = _noisy(np.random.default_rng(seed))
    values[11] *= 1.9
    found = history.outliers(values, COMMITS)
    assert [(o.at, o.commit) for o in found] == [(11, COMMITS[11])]
    assert 1.8 < found[0].ratio < 2.0
    assert history.steps(values, COMMITS) == []


def test_a_one_commit_dip_is_an_outlier_too():
    values = _noisy(np.random.default_rng(7))
    values[5] /= 1.5
    (found,) = history.outliers(values, COMMITS)
    assert found.at == 5 and found.ratio < 1 / 1.4


@pytest.mark.parametrize("seed", range(5))
def test_a_sustained_1_3x_shift_is_a_step_not_an_outlier(seed):
    values = _noisy(np.random.default_rng(100 + seed))
    values[13:] = [v * 1.3 for v in values[13:]]
    assert history.outliers(values, COMMITS) == []
    (step,) = history.steps(values, COMMITS)
    assert step.commit == COMMITS[13] and abs(step.ratio - 1.3) < 0.03 and step.ci_low > 1.2


def test_a_shift_right_after_a_spike_is_both():
    values = _noisy(np.random.default_rng(11))
    values[6] *= 1.9
    values[14:] = [v * 1.3 for v in values[14:]]
    assert [o.at for o in history.outliers(values, COMMITS)] == [6]
    assert [s.at for s in history.steps(values, COMMITS)] == [14]


def test_noise_alone_gives_neither_steps_nor_outliers():
    rng = np.random.default_rng(3)
    series = [_noisy(rng) for _ in range(100)]
    outliers = sum(len(history.outliers(values, COMMITS)) for values in series)
    steps = sum(bool(history.steps(values, COMMITS)) for values in series)
    assert outliers <= 2 and steps <= 5, (outliers, steps)


def test_a_gap_is_skipped_and_indices_stay_the_historys():
    values: list[float | None] = _noisy(np.random.default_rng(12))
    values[3] = None  # a commit that failed to import
    values[9] *= 1.9
    values[16:] = [v * 1.3 for v in values[16:]]
    assert [o.at for o in history.outliers(values, COMMITS)] == [9]
    assert [s.commit for s in history.steps(values, COMMITS)] == [COMMITS[16]]


def test_the_ends_and_short_histories_have_no_outliers():
    values = _noisy(np.random.default_rng(13))
    values[0] *= 1.9
    values[-1] *= 1.9  # the newest commit: a step or an outlier only once the next commit says which
    assert history.outliers(values, COMMITS) == []
    assert history.outliers([1.0, 2.0], COMMITS[:2]) == []
