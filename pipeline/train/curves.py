"""Learning-curve plot (matplotlib, Agg backend): losses and validation AUROC per epoch."""

from __future__ import annotations

from pathlib import Path

from pipeline.figures import plt, png_bytes
from pipeline.storage import write_bytes_if_changed


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    """Write a PNG with train/val loss (left axis) and validation AUROC (right axis) per epoch."""
    epochs = [h["epoch"] for h in history]
    figure, loss_axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_axis.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    loss_axis.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    auroc_axis = loss_axis.twinx()
    auroc_axis.plot(epochs, [h["val_auroc"] for h in history], "^-", color="tab:green", label="validation AUROC")
    auroc_axis.set_ylabel("AUROC")
    auroc_axis.set_ylim(0.0, 1.0)
    lines = loss_axis.get_lines() + auroc_axis.get_lines()
    loss_axis.legend(lines, [str(line.get_label()) for line in lines], loc="lower left", fontsize="small")
    write_bytes_if_changed(path, png_bytes(figure))
