"""The pixel baseline: same folds, deterministic, and the metrics.json block with its paired difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.evaluate.baseline import baseline_metrics, downsample, fit_baseline, target_shape
from pipeline.evaluate.paired import paired_auroc_difference

N_RESAMPLES = 300


def _images(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, 1, 16, 16)`` noise images; positives carry a faint bright square (a linear signal of moderate
    strength), labels 0/1 and three folds."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = rng.normal(0, 1, (n, 1, 16, 16))
    images[y == 1, :, 4:10, 4:10] += 0.25
    return images, y, np.arange(n) % 3


def _features(images: np.ndarray) -> np.ndarray:
    return np.stack([downsample(image).ravel() for image in images])


def _frame(y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"scan_id": [f"s{i:03d}" for i in range(len(y))], "patient_id": [f"p{i // 2}" for i in range(len(y))],
                         "label": y, "fold": folds, "prob_0": 1 - p, "prob_1": p})


def test_downsampling_keeps_small_axes_and_averages_areas() -> None:
    assert target_shape((64, 64)) == (28, 28) and target_shape((64, 40, 8)) == (14, 14, 8)
    image = np.random.default_rng(0).random((3, 56, 56)).astype(np.float32)
    small = downsample(image)
    assert small.shape == (3, 28, 28)
    assert small[0, 0, 0] == pytest.approx(image[0, :2, :2].mean(), abs=1e-6)
    assert downsample(np.ones((1, 8, 8), np.float32)).shape == (1, 8, 8)


def test_each_fold_is_predicted_by_a_baseline_that_never_saw_it_and_runs_are_identical() -> None:
    images, y, folds = _images()
    x = _features(images)
    first = fit_baseline(x, y, folds, x[:10])
    again = fit_baseline(x, y, folds, x[:10])
    assert np.array_equal(first.oof, again.oof) and np.array_equal(first.test, again.test)
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]  # fold 0's own labels never reach fold 0's baseline
    other = fit_baseline(x, flipped, folds, x[:10])
    assert np.array_equal(other.oof[folds == 0], first.oof[folds == 0])
    assert not np.array_equal(other.oof[folds == 1], first.oof[folds == 1])
    assert 0.6 < roc_auc_score(y, first.oof) < 0.97  # learns the square, but not perfectly
    with pytest.raises(ValueError, match="one class"):
        fit_baseline(x, np.where(folds == 0, y, 1), folds, x[:0])


def test_a_strong_model_beats_the_baseline_and_a_weak_one_does_not() -> None:
    images, y, folds = _images()
    predictions = fit_baseline(_features(images), y, folds, _features(images[:40]))
    rng = np.random.default_rng(1)
    strong = 1 / (1 + np.exp(-(6 * (y - 0.5) + rng.normal(0, 1, len(y)))))
    weak = rng.random(len(y))
    test = _frame(y[:40], strong[:40], np.full(40, -1))
    good = baseline_metrics(_frame(y, strong, folds), test, ["0", "1"], predictions, "16x16, 1 channel", N_RESAMPLES)
    assert good["beats_baseline"] and good["shown_to_beat"] and good["statement"].startswith("The model beats")
    assert good["difference"]["oof"]["model_auroc"] == pytest.approx(roc_auc_score(y, strong))
    assert good["oof"]["auroc"] == pytest.approx(roc_auc_score(y, predictions.oof))
    low, high = good["difference"]["oof"]["ci"]
    assert 0 < low <= good["difference"]["oof"]["auroc_difference"] <= high
    assert good["test"]["auroc_ci"] is not None and good["difference"]["test"]["auroc_difference"] is not None
    bad = baseline_metrics(_frame(y, weak, folds), test.iloc[:0], ["0", "1"], predictions, "16x16", N_RESAMPLES)
    assert not bad["beats_baseline"] and not bad["shown_to_beat"]
    assert bad["statement"].startswith("The model does not beat the pixel baseline")
    assert bad["test"] is None and bad["difference"]["test"] is None


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    _, y, _ = _images(60)
    p = np.random.default_rng(2).random(60)
    groups = np.arange(60) // 2
    difference, ci = paired_auroc_difference(y, p, p.copy(), groups, N_RESAMPLES)
    assert difference == 0 and ci == (0.0, 0.0)
    shifted, ci = paired_auroc_difference(y, np.where(y == 1, p + 1, p), p, groups, N_RESAMPLES)
    assert shifted > 0 and ci is not None and ci[0] <= shifted <= ci[1]
