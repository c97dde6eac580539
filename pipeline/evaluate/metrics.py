"""Point metrics of a binary classifier (scikit-learn), at a given decision threshold.

Conventions: ``y`` holds 0/1 labels (1 = positive class), ``p`` the predicted probability of the
positive class, and a case is called positive when ``p >= threshold``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, accuracy, balanced accuracy, sensitivity, specificity, PPV, NPV, F1 and Brier score."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    called = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, called, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "auroc": float(roc_auc_score(y, p)) if both else float("nan"),
        "auprc": float(average_precision_score(y, p)) if both else float("nan"),
        "accuracy": float(accuracy_score(y, called)),
        "balanced_accuracy": float(balanced_accuracy_score(y, called)) if both else float("nan"),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": float(f1_score(y, called, zero_division=0.0)),
        "brier": float(brier_score_loss(y, p)),
        "threshold": float(threshold),
    }


def fast_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic (ties count one half); equals scikit-learn's, faster.

    >>> fast_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
