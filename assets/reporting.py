"""What the UI shows of a training and of a cross-validation fold, built without importing ``dagster``.

The training runs either in the step's process or in a Dagster Pipes child (:mod:`assets.pipes_child`,
which may import only ``dagster_pipes``); both describe their results with these functions. Metadata is
in the Pipes wire format, ``{name: {"raw_value": value, "type": type}}`` (``type`` ``md``, ``json``,
``path``, or ``__infer__`` for plain numbers and text), which a Pipes child reports as it is and
:func:`assets.launcher.dagster_metadata` turns into ``dagster.MetadataValue``\\ s in the step's process.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster_pipes import PipesMetadataValue

from pipeline.layout import ModelFiles, Workdir

if TYPE_CHECKING:
    from pipeline.evaluate.crossval import FoldRun
    from pipeline.train import TrainResult


def markdown_image(path: Path, alt: str | None = None) -> str:
    """A PNG inlined as Markdown (``![alt](data:image/png;base64,...)``) for Dagster metadata."""
    return f"![{alt or path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def _value(raw: Any, kind: str = "__infer__") -> PipesMetadataValue:
    return {"raw_value": raw, "type": kind}  # type: ignore[typeddict-item]  # kind is one of Pipes' type names


def learning_curves_markdown(history: list[dict[str, Any]], curves: Path) -> str:
    """The per-epoch table (train loss, val loss, val AUROC), then the plot when ``curves`` exists."""
    table = "| epoch | train loss | val loss | val AUROC |\n| --- | --- | --- | --- |\n" + "\n".join(
        f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_auroc']:.4f} |" for h in history
    )
    return table + ("\n\n" + markdown_image(curves, "learning curves") if curves.exists() else "")


def training_metadata(result: TrainResult) -> dict[str, PipesMetadataValue]:
    """What the UI shows of one training: the selection metric, the learning curves, the model card."""
    card = result.card
    validation = card["validation"]
    return {
        "model_id": _value(card["model_id"]),
        "selection_metric": _value(validation["selection_metric"]),
        "best_value": _value(validation["best_value"]),
        "best_val_auroc": _value(validation["best_auroc"]),
        "epochs_run": _value(validation["epochs_run"]),
        "weights_source": _value(card["weights_source"]["description"]),
        "device": _value(card["device"]),
        "learning_curves": _value(learning_curves_markdown(result.history, ModelFiles(result.model_dir).curves), "md"),
        "history": _value(result.history, "json"),
        "model_card": _value(card, "json"),
        "model_dir": _value(str(result.model_dir), "path"),
    }


def epoch_line(record: dict[str, Any]) -> str:
    """One finished epoch in a sentence (losses, validation AUROC, learning rate, throughput)."""
    auroc = record.get("val_auroc")
    shown = "n/a" if auroc is None or auroc != auroc else f"{auroc:.4f}"  # NaN: AUROC undefined
    return (
        f"epoch {record['epoch']}{' (head only)' if record.get('head_only') else ''}: "
        f"train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, val AUROC {shown}, "
        f"lr {record['lr']:.3g}, {record['images_per_s']:.1f} images/s"
    )


def fold_row(run: FoldRun) -> dict[str, Any]:
    """One fold's line of ``fold_models``' ``folds`` metadata."""
    return {
        "fold": run.fold,
        "model_id": run.model_id,
        "best_val_auroc": run.best_val_auroc,
        "oof_scans": run.n_oof,
        "test_scans": run.n_test,
        "predicted": run.predicted,
    }


def predictions_stamp(workdir: Path, fold: int) -> tuple[int, int] | None:
    """(mtime in ns, size) of fold ``fold``'s predictions file, None while there is none."""
    path = Workdir(workdir).fold(fold).predictions
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def fold_row_from_files(workdir: Path, fold: int, stamp_before: tuple[int, int] | None) -> dict[str, Any]:
    """:func:`fold_row` read back from what ``scanlens train --fold`` wrote (``fold.json`` and the
    predictions); ``predicted`` says whether the predictions file changed since ``stamp_before``."""
    files = Workdir(workdir).fold(fold)
    record = json.loads(files.record.read_text())
    roles = pd.read_parquet(files.predictions, columns=["role"])["role"]
    return {
        "fold": record["fold"],
        "model_id": record["model_id"],
        "best_val_auroc": record["best_val_auroc"],
        "oof_scans": int((roles == "oof").sum()),
        "test_scans": int((roles == "test").sum()),
        "predicted": predictions_stamp(workdir, fold) != stamp_before,
    }
