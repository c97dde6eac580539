"""Review-board plots as PNG bytes (matplotlib, Agg backend): ROC with a bootstrap band, PR,
calibration, confusion matrix at the operating point, and a per-fold AUROC forest plot.

Each function returns PNG bytes; callers write them atomically. ``Software`` metadata is left out so
the same numbers give the same bytes.
"""

from __future__ import annotations

from typing import Any, Literal

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


#: Colour of the pixel baseline's rows in the forest plot.
BASELINE_COLOR = "tab:orange"


def forest_plot(rows: list[dict[str, Any]], metric: str = "AUROC") -> bytes:
    """Rows of ``label``, ``value``, ``ci`` (or None); the pooled rows drawn as diamonds, the
    ``baseline`` rows (the pixel baseline) as open orange circles with dashed CIs and orange labels."""
    figure, axis = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2), dpi=100)
    for position, row in enumerate(reversed(rows)):
        marker = "o" if row.get("baseline") else "D" if row.get("pooled") else "s"
        color = BASELINE_COLOR if row.get("baseline") else "black"
        if row["value"] is not None:
            axis.plot(row["value"], position, marker, color=color, mfc="white" if row.get("baseline") else color)
        if row.get("ci"):
            style: Literal["--", "-"] = "--" if row.get("baseline") else "-"
            axis.hlines(position, row["ci"][0], row["ci"][1], color=color, lw=1.5, linestyles=style)
        text = (
            "n/a"
            if row["value"] is None
            else f"{row['value']:.3f}" + (f" [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]" if row.get("ci") else "")
        )
        axis.text(1.02, position, text, va="center", fontsize=8, color=color, transform=axis.get_yaxis_transform())
    axis.axvline(0.5, ls=":", color="grey", lw=1)
    axis.set(
        yticks=range(len(rows)),
        yticklabels=[r["label"] for r in reversed(rows)],
        xlim=(0.0, 1.0),
        xlabel=f"{metric} (95% patient-level bootstrap CI)",
        title=f"{metric} per fold",
    )
    for tick, row in zip(axis.get_yticklabels(), reversed(rows), strict=True):
        if row.get("baseline"):
            tick.set_color(BASELINE_COLOR)
    return _png(figure)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def reliability_plot(blocks: list[tuple[str, dict[str, Any]]], title: str) -> bytes:
    """Reliability diagram of one set before and after recalibration: ``blocks`` are (label, block) with
    a block's ``reliability`` bins and ``ece`` (:func:`pipeline.evaluate.calibrated.calibration_summary`)."""
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    for (label, block), style in zip(blocks, ("s--", "o-", "^-"), strict=False):
        rel = block["reliability"]
        axis.plot(rel["mean_predicted"], rel["observed_rate"], style, ms=4, label=f"{label}: ECE {block['ece']:.3f}")
    axis.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    axis.set(
        xlabel="mean predicted probability (equal-mass bins)",
        ylabel="observed positive rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title=title,
    )
    axis.legend(loc="upper left", fontsize=8)
    return _png(figure)


def referral_plot(curve: list[dict[str, Any]], chosen: float) -> bytes:
    """Accuracy on the scans not referred against the realised referral rate, out-of-fold and test,
    for limits pre-specified on out-of-fold predictions at each target rate; the chosen point marked."""
    figure, axis = plt.subplots(figsize=(6, 5.5), dpi=100)
    for part, label in (("oof", "out-of-fold"), ("test", "test (limits from out-of-fold)")):
        points = [
            (c[part]["rate"], c[part]["accuracy"]) for c in curve if c.get(part) and c[part]["accuracy"] is not None
        ]
        if not points:
            continue
        rates, accuracy = zip(*points, strict=True)
        (line,) = axis.plot(np.asarray(rates) * 100, accuracy, "-", lw=1.6, label=label)
        mark = next((c[part] for c in curve if c["target_rate"] == chosen and c.get(part)), None)
        if mark is not None and mark["accuracy"] is not None:
            axis.plot(
                mark["rate"] * 100,
                mark["accuracy"],
                "o",
                ms=8,
                mfc="none",
                color=line.get_color(),
                label=f"{label} at the chosen {chosen:.0%}: referred {mark['rate']:.1%}, accuracy {mark['accuracy']:.3f}",
            )
    axis.set(
        xlabel="referral rate (% of scans decided 'refer')",
        ylabel="accuracy on the scans not referred",
        xlim=(0, 52),
        title="Accuracy against referral rate",
    )
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7)  # below the axes, off the curves
    return _png(figure)


def uncertainty_plots(metrics: dict[str, Any]) -> dict[str, bytes]:
    """``reliability`` (the test set before and after recalibration; out-of-fold when there is no test
    set) and ``referral`` (the referral curve), from a binary evaluation's ``metrics.json`` entries."""
    images: dict[str, bytes] = {}
    before, after = metrics.get("calibration_before"), metrics.get("calibration_after")
    if before and after:
        part = "test" if before.get("test") else "oof"
        method = (metrics.get("recalibration") or {}).get("method", "none")
        name = "held-out test set (fold ensemble)" if part == "test" else "out-of-fold (in-sample for the fit)"
        images["reliability"] = reliability_plot(
            [("before", before[part]), (f"after ({method})", after[part])], f"Reliability, {name}"
        )
    referral = metrics.get("referral")
    if referral:
        images["referral"] = referral_plot(referral["curve"], referral["target_rate"])
    return images
