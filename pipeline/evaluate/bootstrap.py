"""Bootstrap confidence intervals that resample patients (clusters), not images.

Images of one patient are correlated; resampling images pretends they are independent and gives
intervals that are too narrow. The patient-level (cluster) bootstrap draws patients with
replacement and keeps all their images. Percentile intervals; seeded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray, np.ndarray], float]


def cluster_bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    statistic: Statistic,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(y, p)`` when whole groups (patients) are resampled with replacement."""
    y, p, groups = np.asarray(y), np.asarray(p), np.asarray(groups)
    _, codes = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        chosen = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[g] for g in chosen])
        values[r] = statistic(y[index], p[index])
    return _percentiles(values, level)


def image_bootstrap_ci(
    y: np.ndarray, p: np.ndarray, statistic: Statistic, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI resampling single images: valid only when images are independent."""
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        index = rng.integers(0, len(y), len(y))
        values[r] = statistic(y[index], p[index])
    return _percentiles(values, level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
