"""Review-board plots as PNG bytes (matplotlib, Agg backend): ROC with a bootstrap band, PR,
calibration, confusion matrix at the operating point, and a per-fold AUROC forest plot.

Each function returns PNG bytes; callers write them atomically. ``Software`` metadata is left out so
the same numbers give the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from pipeline.figures import plt
from pipeline.figures import png_bytes as _png


def roc_plot(curves: list[dict[str, Any]], title: str = "ROC") -> bytes:
    """``curves``: dicts with ``label``, ``y``, ``p`` and optionally ``band`` = (fpr grid, low, high)."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    for curve in curves:
        fpr, tpr, _ = roc_curve(curve["y"], curve["p"])
        (line,) = axis.plot(fpr, tpr, lw=1.8, label=curve["label"])
        if curve.get("band") is not None:
            grid, low, high = curve["band"]
            axis.fill_between(
                grid, low, high, color=line.get_color(), alpha=0.2, label=f"{curve['label']}: 95% CI band"
            )
    axis.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axis.set(
        xlabel="1 - specificity (false-positive rate)",
        ylabel="sensitivity (true-positive rate)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )
    axis.legend(loc="lower right", fontsize=8)
    return _png(figure)


def pr_plot(curves: list[dict[str, Any]]) -> bytes:
    """Precision-recall curves, with each set's prevalence as a dotted baseline."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    for curve in curves:
        precision, recall, _ = precision_recall_curve(curve["y"], curve["p"])
        (line,) = axis.step(recall, precision, where="post", lw=1.8, label=curve["label"])
        axis.axhline(float(np.mean(curve["y"])), ls=":", lw=1, color=line.get_color())
    axis.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall (dotted: prevalence)",
    )
    axis.legend(loc="lower left", fontsize=8)
    return _png(figure)


def calibration_plot(blocks: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Reliability diagram from each block's equal-mass bins, annotated with ECE, slope and intercept."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    for label, block in blocks:
        rel = block["reliability"]
        axis.plot(
            rel["mean_predicted"],
            rel["observed_rate"],
            "o-",
            ms=4,
            label=f"{label}: ECE {block['ece']:.3f}, slope {_fmt(block['calibration_slope'])}, "
            f"intercept {_fmt(block['calibration_intercept'])}",
        )
    axis.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    axis.set(
        xlabel="mean predicted probability (equal-mass bins)",
        ylabel="observed positive rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Calibration",
    )
    axis.legend(loc="upper left", fontsize=7)
    return _png(figure)


def confusion_plot(panels: list[tuple[str, np.ndarray, np.ndarray]], classes: list[str], subtitle: str) -> bytes:
    """One confusion matrix per panel: (title, true labels, called labels), counts in each cell."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), dpi=100, squeeze=False)
    for axis, (title, truth, called) in zip(axes[0], panels, strict=True):
        matrix = confusion_matrix(truth, called, labels=[int(c) for c in classes])
        axis.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            axis.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if count > matrix.max() / 2 else "black",
                fontsize=11,
            )
        axis.set(
            xticks=range(len(classes)),
            yticks=range(len(classes)),
            xticklabels=classes,
            yticklabels=classes,
            xlabel="predicted",
            ylabel="true",
            title=title,
        )
    figure.suptitle(subtitle, fontsize=9)
    return _png(figure)


def forest_plot(rows: list[dict[str, Any]], metric: str = "AUROC") -> bytes:
    """Rows of ``label``, ``value``, ``ci`` (or None); the pooled rows drawn as diamonds."""
    figure, axis = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2), dpi=100)
    for position, row in enumerate(reversed(rows)):
        marker = "D" if row.get("pooled") else "s"
        if row["value"] is not None:
            axis.plot(row["value"], position, marker, color="black")
        if row.get("ci"):
            axis.hlines(position, row["ci"][0], row["ci"][1], color="black", lw=1.5)
        text = (
            "n/a"
            if row["value"] is None
            else f"{row['value']:.3f}" + (f" [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]" if row.get("ci") else "")
        )
        axis.text(1.02, position, text, va="center", fontsize=8, transform=axis.get_yaxis_transform())
    axis.axvline(0.5, ls=":", color="grey", lw=1)
    axis.set(
        yticks=range(len(rows)),
        yticklabels=[r["label"] for r in reversed(rows)],
        xlim=(0.0, 1.0),
        xlabel=f"{metric} (95% patient-level bootstrap CI)",
        title=f"{metric} per fold",
    )
    return _png(figure)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
