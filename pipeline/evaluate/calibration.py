"""Calibration: reliability-diagram data, ECE with equal-mass bins, logistic recalibration slope and
intercept (Cox 1958). A well-calibrated model has ECE near 0, slope near 1 and intercept near 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class Calibration:
    bin_mean_predicted: list[float]
    bin_observed_rate: list[float]
    bin_counts: list[int]
    ece: float
    slope: float
    intercept: float


def calibration(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> Calibration:
    """Equal-mass bins (quantiles of ``p``); ECE weights each bin's |observed - predicted| by its size.
    Slope and intercept come from a logistic regression of ``y`` on ``logit(p)`` (no regularisation)."""
    y = np.asarray(y).astype(float)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(p))) if len(b)]
    predicted = [float(p[b].mean()) for b in bins]
    observed = [float(y[b].mean()) for b in bins]
    counts = [len(b) for b in bins]
    ece = float(sum(c * abs(o - e) for c, o, e in zip(counts, observed, predicted, strict=True)) / len(p))
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    if len(np.unique(y)) < 2:
        slope = intercept = float("nan")
    else:
        model = LogisticRegression(C=np.inf, solver="lbfgs").fit(logit, y)
        slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    return Calibration(predicted, observed, counts, ece, slope, intercept)
