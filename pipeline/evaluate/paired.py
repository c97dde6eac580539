"""Paired comparison of two sets of scores on the same scans: the AUROC difference and its CI.

The CI is a paired patient-level (cluster) percentile bootstrap: each resample draws patients with
replacement once and scores both models on the same draw, so the case difficulty the models share
cancels and the interval is narrower than two unpaired ones. Used by the registry gate (challenger
against champion) and by the pixel baseline (model against baseline).
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluate.weighted import bootstrap_weights, percentile_ci, weighted_auroc


def paired_auroc_difference(
    y: np.ndarray,
    p_first: np.ndarray,
    p_second: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, tuple[float, float] | None]:
    """(AUROC of ``p_first`` - AUROC of ``p_second``, its paired patient-level bootstrap percentile CI).

    ``y`` is 0/1 (1 = positive class), the scores are positive-class probabilities of the same scans
    in the same order, ``groups`` the patient of each scan. The CI is None when fewer than half the
    resamples hold both classes.
    """
    ones = np.ones((1, len(y)))
    difference = float(weighted_auroc(y, p_first, ones)[0] - weighted_auroc(y, p_second, ones)[0])
    draws = [
        weighted_auroc(y, p_first, w) - weighted_auroc(y, p_second, w)
        for w in bootstrap_weights(groups, n_resamples, seed)
    ]
    return difference, percentile_ci(np.concatenate(draws), level)
