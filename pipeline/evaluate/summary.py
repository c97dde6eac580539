"""One block of review-board statistics for a set of predictions: point metrics with patient-level
bootstrap CIs, DeLong's AUROC CI as a cross-check, calibration, counts. Binary and multi-class.

Every CI is a 95% percentile interval (``level``) over ``n_resamples`` patient-level resamples,
seeded, so the same inputs give the same numbers. A CI is ``None`` where the data cannot support one
(a class with fewer than two patients, or too many degenerate resamples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.evaluate.calibration import calibration
from pipeline.evaluate.delong import delong_ci
from pipeline.evaluate.metrics import point_metrics
from pipeline.evaluate.weighted import (
    METRICS,
    bootstrap_weights,
    percentile_ci,
    weighted_auprc,
    weighted_auroc,
    weighted_metrics,
)


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _ci(values: np.ndarray, level: float) -> list[float] | None:
    ci = percentile_ci(values, level)
    return None if ci is None else [ci[0], ci[1]]


def _patients_per_class(y: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    return {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}


def binary_block(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    with_calibration: bool = True,
) -> dict[str, Any]:
    """Metrics at ``threshold`` with ``<metric>_ci`` for each, ``auroc_delong_ci``, ECE, calibration
    slope/intercept and the reliability-diagram bins. ``p`` is the positive-class probability."""
    y, p, groups = np.asarray(y).astype(int), np.asarray(p, dtype=float), np.asarray(groups)
    point = point_metrics(y, p, threshold)
    block: dict[str, Any] = {
        "n_scans": len(y),
        "n_patients": len(np.unique(groups)),
        "n_positive": int(y.sum()),
        "n_negative": int((1 - y).sum()),
        "patients_per_class": {str(k): v for k, v in _patients_per_class(y, groups).items()},
        "threshold": float(threshold),
    }
    resampled: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    supported = min(_patients_per_class(y, groups).values(), default=0) >= 2 and len(np.unique(y)) == 2
    if supported:
        for w in bootstrap_weights(groups, n_resamples, seed):
            for name, values in weighted_metrics(y, p, threshold, w).items():
                resampled[name].append(values)
    for name in METRICS:
        block[name] = _clean(point[name])
        block[f"{name}_ci"] = _ci(np.concatenate(resampled[name]), level) if supported else None
    _, low, high = delong_ci(y, p, level)
    block["auroc_delong_ci"] = None if not np.isfinite(low) else [low, high]
    if with_calibration:
        cal = calibration(y, p)
        block.update(
            ece=cal.ece,
            calibration_slope=_clean(cal.slope),
            calibration_intercept=_clean(cal.intercept),
            reliability={
                "mean_predicted": cal.bin_mean_predicted,
                "observed_rate": cal.bin_observed_rate,
                "count": cal.bin_counts,
            },
        )
    return block


def multiclass_block(
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[int],
    groups: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """One-vs-rest AUROC/AUPRC per class with CIs, macro AUROC with CI, and argmax-decision accuracy,
    balanced accuracy and per-class sensitivity/specificity. ``probs`` columns follow ``classes``."""
    y, probs, groups = np.asarray(y).astype(int), np.asarray(probs, dtype=float), np.asarray(groups)
    called = np.asarray(classes)[probs.argmax(axis=1)]
    per_class: dict[str, Any] = {}
    macro_draws = []
    weights = list(bootstrap_weights(groups, n_resamples, seed))
    for j, c in enumerate(classes):
        yc, pc = (y == c).astype(int), probs[:, j]
        auroc = [weighted_auroc(yc, pc, w) for w in weights]
        auprc = [weighted_auprc(yc, pc, w) for w in weights]
        macro_draws.append(np.concatenate(auroc))
        sens = float(((called == c) & (y == c)).sum() / max(1, (y == c).sum()))
        spec = float(((called != c) & (y != c)).sum() / max(1, (y != c).sum()))
        both = 0 < yc.sum() < len(yc)
        per_class[str(c)] = {
            "n_scans": int(yc.sum()),
            "auroc": float(roc_auc_score(yc, pc)) if both else None,
            "auroc_ci": _ci(np.concatenate(auroc), level),
            "auprc": _clean(float(weighted_auprc(yc, pc, np.ones((1, len(y))))[0])),
            "auprc_ci": _ci(np.concatenate(auprc), level),
            "sensitivity": sens,
            "specificity": spec,
        }
    macro = float(np.mean([v["auroc"] for v in per_class.values() if v["auroc"] is not None]))
    onehot = (y[:, None] == np.asarray(classes)[None, :]).astype(float)
    accuracy_draws = np.concatenate([_div_rows(w @ (called == y).astype(float), w.sum(axis=1)) for w in weights])
    recalls = [float((called[y == c] == c).mean()) for c in classes if (y == c).any()]
    return {
        "n_scans": len(y),
        "n_patients": len(np.unique(groups)),
        "auroc": macro,
        "auroc_ci": _ci(np.nanmean(np.vstack(macro_draws), axis=0), level),
        "macro_auroc": macro,
        "accuracy": float((called == y).mean()),
        "accuracy_ci": _ci(accuracy_draws, level),
        "balanced_accuracy": float(np.mean(recalls)),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "threshold": None,
        "decision": "argmax of the class probabilities",
        "per_class": per_class,
    }


def _div_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a / np.where(b > 0, b, np.nan)
