"""Vectorised patient-level bootstrap: every resample at once, as per-image weights.

Drawing patients with replacement is the same as giving each patient a multinomial count and each
image its patient's count as a weight. Metrics computed with those weights equal the metrics of the
resampled data set, so ``R`` resamples become one ``(R, n)`` weight matrix and a few matrix products
instead of ``R`` Python-level loops. Paired comparisons (two models on one resample) reuse the weights.

Conventions as in :mod:`pipeline.evaluate.metrics`: ``y`` is 0/1 (1 = positive class), ``p`` the
probability of the positive class, positive call when ``p >= threshold``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

#: Metrics that :func:`weighted_metrics` returns, one value per resample.
METRICS = ("auroc", "auprc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "brier")


def bootstrap_weights(groups: np.ndarray, n_resamples: int, seed: int, chunk: int = 250) -> Iterator[np.ndarray]:
    """Yield ``(r, n)`` image-weight matrices, ``n_resamples`` rows in all, seeded.

    Each row draws as many patients as there are, with replacement; an image's weight is how often its
    patient was drawn.

    >>> w = np.vstack(list(bootstrap_weights(np.array(["a", "a", "b"]), 4, seed=0)))
    >>> w.shape, bool((w[:, 0] == w[:, 1]).all()), bool((w.sum(axis=1) % 1 == 0).all())
    ((4, 3), True, True)
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=r).astype(np.float64)
        yield counts[:, codes]
        done += r


def _ranked(p: np.ndarray) -> tuple[sparse.csr_matrix, int]:
    """One-hot ``(n, U)`` of each image's distinct score, U ascending."""
    _, inverse = np.unique(p, return_inverse=True)
    n_unique = int(inverse.max()) + 1
    onehot = sparse.csr_matrix((np.ones(len(p)), (np.arange(len(p)), inverse)), shape=(len(p), n_unique))
    return onehot, n_unique


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def weighted_auc_curves(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample (rows of ``w``): cumulative positive and negative weight at each distinct score,
    from the highest score down, and the totals. Shapes ``(R, U)``, ``(R, U)``, ``(R, 2)``."""
    y = np.asarray(y).astype(bool)
    onehot, _ = _ranked(np.asarray(p, dtype=float))
    pos = np.asarray((w * y) @ onehot)[:, ::-1]  # descending score
    neg = np.asarray((w * ~y) @ onehot)[:, ::-1]
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    return tp, fp, np.stack([tp[:, -1], fp[:, -1]], axis=1)


def weighted_auroc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row of ``w`` (ties count one half); NaN where a class has no weight."""
    tp, fp, totals = weighted_auc_curves(y, p, w)
    pos = np.diff(tp, axis=1, prepend=0.0)
    neg = np.diff(fp, axis=1, prepend=0.0)
    below = totals[:, 1:2] - fp  # negative weight strictly below each score
    return _div((pos * (below + 0.5 * neg)).sum(axis=1), totals[:, 0] * totals[:, 1])


def weighted_auprc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition) per row of ``w``."""
    tp, fp, totals = weighted_auc_curves(y, p, w)
    precision = np.nan_to_num(_div(tp, tp + fp))
    recall_step = np.diff(tp, axis=1, prepend=0.0)
    return _div((recall_step * precision).sum(axis=1), totals[:, 0])


def weighted_metrics(y: np.ndarray, p: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of ``w`` (a weight per image)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    called = p >= threshold
    tp, fp = w @ (y & called), w @ (~y & called)
    fn, tn = w @ (y & ~called), w @ (~y & ~called)
    total = tp + fp + fn + tn
    sensitivity, specificity = _div(tp, tp + fn), _div(tn, tn + fp)
    return {
        "auroc": weighted_auroc(y, p, w),
        "auprc": weighted_auprc(y, p, w),
        "accuracy": _div(tp + tn, total),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "brier": _div(w @ (p - y) ** 2, total),
    }


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the finite values; None when fewer than half the resamples are finite."""
    finite = values[np.isfinite(values)]
    if finite.size < max(1, values.size // 2):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def roc_band(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, fpr_grid: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the ROC curve's TPR at each false-positive rate of ``fpr_grid``."""
    tp, fp, totals = weighted_auc_curves(y, p, w)
    tpr = np.hstack([np.zeros((len(w), 1)), _div(tp, totals[:, :1])])
    fpr = np.hstack([np.zeros((len(w), 1)), _div(fp, totals[:, 1:2])])
    curves = np.array(
        [
            np.interp(fpr_grid, f, t)
            for f, t in zip(fpr, tpr, strict=True)
            if np.isfinite(f).all() and np.isfinite(t).all()
        ]
    )
    tail = (1 - level) / 2 * 100
    return np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)
