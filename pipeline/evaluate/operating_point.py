"""Choosing the decision threshold on out-of-fold predictions, before the test set is seen."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from pipeline.errors import UserInputError


def choose_threshold(y: np.ndarray, p: np.ndarray, target_sensitivity: float | None = None) -> float:
    """Youden's J (max sensitivity + specificity - 1) by default, or the highest threshold whose
    sensitivity reaches ``target_sensitivity``. Takes only the data it is given: pass OOF predictions."""
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise UserInputError("an operating point needs both classes in the out-of-fold predictions")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(p, dtype=float), drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if target_sensitivity is None:
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if not 0 < target_sensitivity <= 1:
        raise UserInputError("target sensitivity must be in (0, 1]")
    reaching = np.flatnonzero(tpr >= target_sensitivity)
    return float(thresholds[reaching[0]])
