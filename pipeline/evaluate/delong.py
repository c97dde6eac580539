"""DeLong's variance of the AUROC (DeLong, DeLong & Clarke-Pearson 1988), via placement values.

Treats cases as independent: a cross-check for the patient-level bootstrap, not a replacement.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata


def delong_ci(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(AUROC, lower, upper): normal-approximation CI with DeLong's standard error, clipped to [0, 1]."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    positives, negatives = p[y], p[~y]
    m, n = len(positives), len(negatives)
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    all_ranks = rankdata(np.concatenate([positives, negatives]))
    pos_ranks, neg_ranks = rankdata(positives), rankdata(negatives)
    v10 = (all_ranks[:m] - pos_ranks) / n  # for each positive: share of negatives it outranks
    v01 = 1.0 - (all_ranks[m:] - neg_ranks) / m  # for each negative: share of positives above it
    auc = float(v10.mean())
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    half = norm.ppf(0.5 + level / 2) * np.sqrt(variance)
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))
