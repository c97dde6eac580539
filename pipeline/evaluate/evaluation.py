"""Pooling the folds into review-board statistics: ``W/evaluation/``.

Writes ``oof_predictions.parquet``, ``test_predictions.parquet`` (the fold models' mean probability,
when a test set exists), ``metrics.json`` and the plots (``roc.png``, ``pr.png``, ``calibration.png``,
``confusion_matrix.png``, ``forest.png``; binary tasks also ``reliability.png`` and ``referral.png``).
The operating point is chosen on the out-of-fold predictions only (Youden's J, or a target
sensitivity) and then applied unchanged to the test set. For a binary task the positive class is the
larger label value, the probabilities are recalibrated (fitted on the pooled out-of-fold
probabilities, applied to each fold model before the ensemble mean: :mod:`pipeline.evaluate.calibrated`),
the operating point is chosen on the calibrated scale, and the referral limits
(:mod:`pipeline.evaluate.referral`) are pre-specified on out-of-fold predictions too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluate import plots
from pipeline.evaluate.baseline import evaluate_baseline
from pipeline.evaluate.calibrated import calibrated_sets, uncertainty_metrics
from pipeline.evaluate.classes import binary_target, positive_class, probability_column
from pipeline.evaluate.crossval import train_fold
from pipeline.evaluate.fingerprint import build_fingerprint
from pipeline.evaluate.folds import (
    CVSettings,
    Folds,
    fold_counts,
    load_folds,
    make_folds,
)
from pipeline.evaluate.operating_point import choose_threshold
from pipeline.evaluate.subgroups import subgroup_table, with_subgroup_columns
from pipeline.evaluate.summary import binary_block, multiclass_block
from pipeline.evaluate.weighted import bootstrap_weights, roc_band
from pipeline.layout import Workdir
from pipeline.locking import writes_workdir
from pipeline.preprocess import AugmentConfig, PreprocessConfig
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.evaluate import EvaluationSettings
from pipeline.storage import write_bytes_if_changed, write_parquet_if_changed
from pipeline.train import TrainConfig
from pipeline.train.distributed import join_world, on_main

log = logging.getLogger(__name__)
PLOTS = ("roc", "pr", "calibration", "confusion_matrix", "forest", "reliability", "referral")


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    folder: Path
    plots: dict[str, Path] = field(default_factory=dict)


def _collect(workdir: Path, folds: Folds) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    frames, records = [], []
    for k in range(folds.settings.n_folds):
        target = Workdir(workdir).fold(k)
        if not target.record.exists():
            raise UserInputError(
                f"fold {k} has no model yet: materialise fold_models partition fold_{k} (or run `scanlens evaluate`)"
            )
        record = json.loads(target.record.read_text())
        if record["folds_hash"] != folds.folds_hash:
            raise UserInputError(f"fold {k}'s model was trained on an older fold assignment: re-run fold_{k}")
        records.append(record)
        frames.append(pd.read_parquet(target.predictions).assign(model_fold=k))
    if len({r["settings_hash"] for r in records}) > 1:
        raise UserInputError("the fold models were trained with different settings: re-run every fold with one config")
    if len({tuple(r["classes"]) for r in records}) > 1:
        raise UserInputError("the fold models saw different classes (a class missing from some training folds)")
    return pd.concat(frames, ignore_index=True), records


def _binary(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels (1 = the positive class) and the positive-class probabilities."""
    return binary_target(frame, classes)


def evaluate_cv(workdir: Path, settings: EvaluationSettings = EvaluationSettings()) -> Evaluation:
    """Pool the fold models' predictions into metrics, CIs, calibration, subgroups and plots."""
    folds = load_folds(workdir)
    predictions, records = _collect(workdir, folds)
    classes = [str(c) for c in records[0]["classes"]]
    prob_columns = [probability_column(c) for c in classes]
    binary = len(classes) == 2
    if binary:  # calibrated probabilities, the fold ensemble's spread (pipeline.evaluate.calibrated)
        sets = calibrated_sets(predictions, classes, settings.calibration)
        oof, test = sets.oof, sets.test
    else:
        oof = predictions[predictions["role"] == "oof"].sort_values("scan_id").reset_index(drop=True)
        oof = oof[["scan_id", "patient_id", "fold", "label", *prob_columns]]
        test = (
            predictions[predictions["role"] == "test"]
            .groupby(["scan_id", "patient_id", "label"], as_index=False)
            .agg(**{c: (c, "mean") for c in prob_columns}, n_models=("fold", "size"))
        )
    wd = Workdir(workdir)
    write_parquet_if_changed(wd.oof_predictions, oof)
    if len(test):
        write_parquet_if_changed(wd.test_predictions, test)
    args = (settings.n_resamples, settings.seed, settings.level)
    rule = "youden" if settings.target_sensitivity is None else f"sensitivity >= {settings.target_sensitivity}"
    metrics: dict[str, Any] = {
        "task": "binary" if binary else "multiclass",
        "classes": classes,
        "positive_class": positive_class(classes) if binary else None,
        "settings": {
            "n_folds": folds.settings.n_folds,
            "fold_seed": folds.settings.seed,
            "dims": folds.settings.dims,
            "test_set": folds.test_source,
            "folds_hash": folds.folds_hash,
            "n_resamples": settings.n_resamples,
            "ci_level": settings.level,
            "bootstrap": "patient-level (cluster) percentile bootstrap",
            "bootstrap_seed": settings.seed,
            "calibration": settings.calibration if binary else None,
            "referral_rate": settings.referral_rate if binary else None,
        },
        "counts": fold_counts(folds.frame),
        "fold_warnings": [str(p) for p in folds.problems],
        "models": [
            {"fold": r["fold"], "model_id": r["model_id"], "best_val_auroc": r["best_val_auroc"]} for r in records
        ],
    }
    if binary:
        y_oof, p_oof = _binary(oof, classes)
        threshold = choose_threshold(y_oof, p_oof, settings.target_sensitivity)
        metrics["operating_point"] = {
            "rule": rule,
            "threshold": threshold,
            "scale": f"calibrated probability ({settings.calibration})",
            "statement": "pre-specified on the pooled calibrated out-of-fold probabilities before the test set "
            "was scored, and applied unchanged to the test set",
        }
        metrics["oof"] = binary_block(y_oof, p_oof, oof["patient_id"].to_numpy(), threshold, *args)
        if test.empty:
            metrics["test"] = None
        else:
            y_test, p_test = _binary(test, classes)
            metrics["test"] = binary_block(y_test, p_test, test["patient_id"].to_numpy(), threshold, *args)
        metrics.update(uncertainty_metrics(sets, classes, threshold, settings.referral_rate, *args))
        metrics["folds"] = []
        for k, part in oof.groupby("fold"):
            y_fold, p_fold = _binary(part, classes)
            block = binary_block(
                y_fold, p_fold, part["patient_id"].to_numpy(), threshold, *args, with_calibration=False
            )
            metrics["folds"].append({"fold": int(k), **block})
    else:
        metrics["operating_point"] = {
            "rule": "argmax",
            "threshold": None,
            "statement": "multi-class decisions take the most probable class",
        }
        ints = [int(c) for c in classes]
        metrics["oof"] = multiclass_block(
            oof["label"].to_numpy(), oof[prob_columns].to_numpy(), ints, oof["patient_id"].to_numpy(), *args
        )
        metrics["test"] = (
            None
            if test.empty
            else multiclass_block(
                test["label"].to_numpy(), test[prob_columns].to_numpy(), ints, test["patient_id"].to_numpy(), *args
            )
        )
        metrics["folds"] = [
            {
                "fold": int(k),
                **multiclass_block(
                    part["label"].to_numpy(), part[prob_columns].to_numpy(), ints, part["patient_id"].to_numpy(), *args
                ),
            }
            for k, part in oof.groupby("fold")
        ]
    metrics["subgroups"] = _subgroups(workdir, oof, test, classes, metrics, settings) if settings.subgroups else {}
    metrics["ood"] = build_fingerprint(workdir, folds, records)  # training-data fingerprint for scoring
    metrics["baseline"] = _baseline_block(workdir, records, oof, test, classes, settings)
    written = _plots(wd, oof, test, classes, metrics, settings)
    write_bytes_if_changed(wd.metrics, json.dumps(metrics, indent=2, default=_jsonable).encode())
    log.info(
        "evaluation: pooled out-of-fold AUROC %.4f %s; test %s",
        metrics["oof"]["auroc"],
        metrics["oof"]["auroc_ci"],
        "none" if metrics["test"] is None else f"{metrics['test']['auroc']:.4f} {metrics['test']['auroc_ci']}",
    )
    return Evaluation(metrics, wd.evaluation, written)


def _baseline_block(
    workdir: Path,
    records: list[dict[str, Any]],
    oof: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    settings: EvaluationSettings,
) -> dict[str, Any]:
    """The pixel baseline on the same folds and test set (:mod:`pipeline.evaluate.baseline`)."""
    model_id = records[0]["model_id"]
    args = (settings.n_resamples, settings.seed, settings.level)
    return evaluate_baseline(workdir, model_id, oof, test, classes, *args)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _subgroups(
    workdir: Path,
    oof: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    metrics: dict[str, Any],
    settings: EvaluationSettings,
) -> dict[str, Any]:
    if len(classes) != 2:
        return {"note": "subgroup tables are computed for binary tasks"}
    catalog = pd.read_parquet(Workdir(workdir).catalog)
    threshold = metrics["operating_point"]["threshold"]
    out: dict[str, Any] = {}
    for name, frame in (("oof", oof), ("test", test)):
        if frame.empty:
            out[name] = None
            continue
        y, p = _binary(frame, classes)
        joined = with_subgroup_columns(frame.assign(p=p, label=y), catalog, list(settings.subgroups))
        out[name] = subgroup_table(
            joined,
            list(settings.subgroups),
            threshold,
            settings.min_subgroup_patients,
            settings.n_resamples,
            settings.seed,
        )
    return out


def _plots(
    wd: Workdir,
    oof: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    metrics: dict[str, Any],
    settings: EvaluationSettings,
) -> dict[str, Path]:
    images: dict[str, bytes] = {}
    sets = [("out-of-fold", oof)] + ([("test (fold ensemble)", test)] if len(test) else [])
    forest = [{"label": f"fold {f['fold']}", "value": f["auroc"], "ci": f["auroc_ci"]} for f in metrics["folds"]]
    forest.append(
        {
            "label": "pooled out-of-fold",
            "value": metrics["oof"]["auroc"],
            "ci": metrics["oof"]["auroc_ci"],
            "pooled": True,
        }
    )
    if metrics["test"] is not None:
        forest.append(
            {"label": "test", "value": metrics["test"]["auroc"], "ci": metrics["test"]["auroc_ci"], "pooled": True}
        )
    for part, label in (("oof", "pixel baseline, out-of-fold"), ("test", "pixel baseline, test")):
        block = (metrics.get("baseline") or {}).get(part)
        if block:
            forest.append({"label": label, "value": block["auroc"], "ci": block["auroc_ci"], "baseline": True})
    images["forest"] = plots.forest_plot(forest, "AUROC" if len(classes) == 2 else "macro AUROC")
    if len(classes) == 2:
        positive = int(positive_class(classes))
        curves = []
        grid = np.linspace(0, 1, 101)
        for label, frame in sets:
            y, p = _binary(frame, classes)
            weights = np.vstack(
                list(bootstrap_weights(frame["patient_id"].to_numpy(), settings.n_resamples, settings.seed))
            )
            band = (grid, *roc_band(y, p, weights, grid, settings.level)) if 0 < y.sum() < len(y) else None
            curves.append({"label": label, "y": y, "p": p, "band": band})
        images["roc"] = plots.roc_plot(curves, "ROC (band: 95% patient-level bootstrap)")
        images["pr"] = plots.pr_plot(curves)
        blocks = [("out-of-fold", metrics["oof"])] + ([("test", metrics["test"])] if metrics["test"] else [])
        images["calibration"] = plots.calibration_plot(blocks)
        images.update(plots.uncertainty_plots(metrics))  # reliability before/after, referral curve
        threshold = metrics["operating_point"]["threshold"]
        panels = [
            (
                label,
                frame["label"].to_numpy(),
                np.where(_binary(frame, classes)[1] >= threshold, positive, int(classes[0])),
            )
            for label, frame in sets
        ]
        images["confusion_matrix"] = plots.confusion_plot(
            panels,
            classes,
            f"operating point p >= {threshold:.3f} ({metrics['operating_point']['rule']}), "
            "pre-specified on out-of-fold predictions",
        )
    else:
        columns = [f"prob_{c}" for c in classes]
        curves = [
            {
                "label": f"class {c} vs rest",
                "y": (oof["label"].to_numpy() == int(c)).astype(int),
                "p": oof[f"prob_{c}"].to_numpy(),
            }
            for c in classes
        ]
        images["roc"] = plots.roc_plot(curves, "One-vs-rest ROC (out-of-fold)")
        panels = [
            (
                label,
                frame["label"].to_numpy(),
                np.asarray([int(c) for c in classes])[frame[columns].to_numpy().argmax(1)],
            )
            for label, frame in sets
        ]
        images["confusion_matrix"] = plots.confusion_plot(panels, classes, "decision: most probable class")
    paths = {}
    for name, data in images.items():
        write_bytes_if_changed(wd.plot(name), data)
        paths[name] = wd.plot(name)
    return paths


@writes_workdir("evaluate")
def cross_validate(
    workdir: Path,
    cv: CVSettings,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig,
    settings: EvaluationSettings = EvaluationSettings(),
    progress: bool = False,
    dist: DistributedSettings = DistributedSettings(),
) -> Evaluation:
    """The whole evaluation: persist folds, train (or resume) every fold model, pool the statistics.
    Under torchrun every process calls this; rank 0 writes, and every process returns its result."""
    world, _ = join_world(cfg.device, cfg.deterministic, dist.collective_timeout)
    folds = on_main(world, lambda: make_folds(workdir, cv))
    if any(p.severity == "error" for p in folds.problems):
        raise UserInputError("fold assignment failed its checks: " + "; ".join(str(p) for p in folds.problems))
    for k in range(cv.n_folds):
        train_fold(workdir, k, cfg, pre, aug, folds=folds, progress=progress, dist=dist)
    return on_main(world, lambda: evaluate_cv(workdir, settings))
