"""The vectorised patient bootstrap equals resampling patients explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.metrics import point_metrics
from pipeline.evaluate.weighted import METRICS, bootstrap_weights, percentile_ci, roc_band, weighted_metrics


def test_weighted_metrics_equal_the_metrics_of_the_resampled_data() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 240)
    p = np.round(rng.random(240), 2)  # many ties
    groups = rng.integers(0, 70, 240)
    weights = np.vstack(list(bootstrap_weights(groups, 40, seed=1, chunk=16)))
    assert weights.shape == (40, 240)
    for a, b in zip(*np.nonzero(groups[:, None] == groups[None, :])):
        assert (weights[:, a] == weights[:, b]).all()  # a patient's images share one weight
        break
    values = weighted_metrics(y, p, 0.5, weights)
    for r in range(8):
        index = np.repeat(np.arange(len(y)), weights[r].astype(int))
        expected = point_metrics(y[index], p[index], 0.5)
        for name in METRICS:
            assert values[name][r] == pytest.approx(expected[name], abs=1e-12), name


def test_each_resample_draws_as_many_patients_as_there_are() -> None:
    groups = np.repeat(np.arange(30), 3)
    for chunk in bootstrap_weights(groups, 100, seed=0):
        assert (chunk.sum(axis=1) == 90).all()


def test_roc_band_brackets_the_curve_and_degenerate_cis_are_none() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = rng.normal(y, 1.0)
    weights = np.vstack(list(bootstrap_weights(np.arange(400), 300, seed=0)))
    grid = np.linspace(0, 1, 21)
    low, high = roc_band(y, p, weights, grid)
    assert (low <= high + 1e-12).all() and low[0] >= 0 and high[-1] == pytest.approx(1.0)
    assert percentile_ci(np.full(10, np.nan)) is None
