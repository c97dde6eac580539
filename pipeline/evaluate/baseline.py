"""The trivial baseline every evaluation is measured against: logistic regression on raw pixels.

Input: the model inputs the fold models saw (the preprocessing cache, built with the preprocessing
config of the fold models' cards), area-downsampled to 28 x 28 (2D) or 14 x 14 x 14 (3D): an axis
already smaller keeps its size, nothing is upsampled. Every channel is flattened; the features are
standardised and fitted by L2-regularised logistic regression (scikit-learn, ``C`` = 0.1, lbfgs).

Same folds, same test set as the model: fold ``k``'s baseline fits on every other fold (never on the
test set) and predicts fold ``k`` (out-of-fold); the test prediction is the mean of the K fold
baselines' probabilities, as for the model's fold ensemble. Nothing is random, so the same inputs
give the same numbers. Binary tasks only.

``metrics.json["baseline"]`` (:func:`baseline_metrics`): the baseline's AUROC with its patient-level
bootstrap CI on pooled OOF and test (its own threshold, Youden's J on its own OOF predictions, for
the threshold metrics), the model-minus-baseline AUROC difference with its paired patient-level
bootstrap CI (:mod:`pipeline.evaluate.paired`), ``beats_baseline`` (the pooled-OOF point difference
is above 0), ``shown_to_beat`` (the lower CI bound of that difference is above 0) and a one-sentence
``statement``. Where no baseline can be fitted, the block is ``{"note": <why>}``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.evaluate.classes import binary_target
from pipeline.evaluate.operating_point import choose_threshold
from pipeline.evaluate.paired import paired_auroc_difference
from pipeline.evaluate.summary import binary_block
from pipeline.layout import Workdir
from pipeline.preprocess import PreprocessConfig, preprocess_catalog

log = logging.getLogger(__name__)

METHOD = "logistic regression on downsampled raw pixels"
#: Inverse L2 regularisation strength of the logistic regression.
C = 0.1
MAX_ITER = 2000
#: Edge of the downsampled input per spatial dimensionality (voxels).
EDGE = {2: 28, 3: 14}


@dataclass(frozen=True)
class BaselinePredictions:
    """Positive-class probabilities: ``oof`` per out-of-fold row and ``test`` per test row (the mean
    of the fold baselines), in the order of the rows given to :func:`fit_baseline`."""

    oof: np.ndarray
    test: np.ndarray


def target_shape(spatial: Sequence[int]) -> tuple[int, ...]:
    """The downsampled spatial shape: :data:`EDGE` per axis, never more than the input's size."""
    edge = EDGE[len(spatial)]
    return tuple(min(edge, int(size)) for size in spatial)


def downsample(array: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` float array to ``(C, *target_shape(spatial))`` by area averaging."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    resized = torch.nn.functional.interpolate(tensor, size=target_shape(array.shape[1:]), mode="area")
    return resized[0].numpy()


def pixel_features(paths: Sequence[Path]) -> np.ndarray:
    """One row of downsampled, flattened pixels per cached model input (``.npy``, ``(C, *spatial)``)."""
    return np.stack([downsample(np.load(path)).ravel() for path in paths]).astype(np.float64)


def _model() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))


def _fit(x: np.ndarray, y: np.ndarray, fold: object) -> Pipeline:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = _model().fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("pixel baseline of fold %s: lbfgs did not converge in %d iterations", fold, MAX_ITER)
    return model


def fit_baseline(x_oof: np.ndarray, y_oof: np.ndarray, folds: np.ndarray, x_test: np.ndarray) -> BaselinePredictions:
    """Fit one baseline per fold on the other folds' rows; predict its fold (OOF) and the test rows.

    ``y_oof`` is 0/1; ``folds`` the fold of each OOF row. Raises ``ValueError`` when a fold's
    training rows hold one class only.
    """
    y_oof, folds = np.asarray(y_oof).astype(int), np.asarray(folds)
    oof = np.full(len(y_oof), np.nan)
    test = np.zeros(len(x_test))
    members = np.unique(folds)
    for k in members:
        train = folds != k
        if len(np.unique(y_oof[train])) < 2:
            raise ValueError(f"the training folds of fold {k} hold one class only")
        model = _fit(x_oof[train], y_oof[train], k)
        oof[~train] = model.predict_proba(x_oof[~train])[:, 1]
        if len(x_test):
            test += model.predict_proba(x_test)[:, 1] / len(members)
    return BaselinePredictions(oof, test)


def _difference(
    y: np.ndarray, p_model: np.ndarray, p_base: np.ndarray, groups: np.ndarray, args: tuple[int, int, float]
) -> dict[str, Any]:
    """Model minus baseline AUROC with its paired CI; None throughout where ``y`` holds one class."""
    if len(np.unique(y)) < 2:
        return {"model_auroc": None, "baseline_auroc": None, "auroc_difference": None, "ci": None}
    difference, ci = paired_auroc_difference(y, p_model, p_base, groups, *args)
    return {
        "model_auroc": float(roc_auc_score(y, p_model)),
        "baseline_auroc": float(roc_auc_score(y, p_base)),
        "auroc_difference": difference,
        "ci": None if ci is None else [ci[0], ci[1]],
    }


def _statement(model: float, base: float, difference: float, ci: list[float] | None, level: float) -> str:
    figures = f"pooled out-of-fold AUROC {model:.3f} vs {base:.3f}, difference {difference:+.3f}"
    interval = "no CI" if ci is None else f"{level:.0%} CI {ci[0]:+.3f} to {ci[1]:+.3f}"
    if difference <= 0:
        return f"The model does not beat the pixel baseline: {figures} ({interval})."
    if ci is None or ci[0] <= 0:
        return f"The model is not shown to beat the pixel baseline: {figures} ({interval}, which includes 0)."
    return f"The model beats the pixel baseline: {figures} ({interval})."


def baseline_metrics(
    oof: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    predictions: BaselinePredictions,
    described_input: str,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The ``baseline`` block of ``metrics.json`` from the model's OOF and test predictions (``label``,
    ``patient_id``, ``prob_<class>``) and the baseline's, row for row."""
    args = (n_resamples, seed, level)
    y_oof, p_oof = binary_target(oof, classes)
    groups_oof = oof["patient_id"].to_numpy()
    threshold = choose_threshold(y_oof, predictions.oof)
    block: dict[str, Any] = {
        "method": METHOD,
        "input": described_input,
        "C": C,
        "standardised": True,
        "folds": "the evaluation's folds: fold k's baseline fits on the other folds; test = mean of the fold baselines",
        "threshold_rule": "youden, on the baseline's own out-of-fold predictions",
        "oof": binary_block(y_oof, predictions.oof, groups_oof, threshold, *args, with_calibration=False),
        "test": None,
        "difference": {"oof": _difference(y_oof, p_oof, predictions.oof, groups_oof, args), "test": None},
    }
    if len(test):
        y_test, p_test = binary_target(test, classes)
        groups_test = test["patient_id"].to_numpy()
        block["test"] = binary_block(y_test, predictions.test, groups_test, threshold, *args, with_calibration=False)
        block["difference"]["test"] = _difference(y_test, p_test, predictions.test, groups_test, args)
    pooled = block["difference"]["oof"]
    ci = pooled["ci"]
    block["beats_baseline"] = bool(pooled["auroc_difference"] > 0)
    block["shown_to_beat"] = bool(ci is not None and ci[0] > 0)
    block["statement"] = _statement(
        pooled["model_auroc"], pooled["baseline_auroc"], pooled["auroc_difference"], ci, level
    )
    return block


def _described(source: Sequence[int]) -> str:
    """``"28x28, 1 channel"`` (with the source size when it was downsampled) for inputs of shape ``source``."""
    channels, spatial = source[0], target_shape(source[1:])
    text = "x".join(str(s) for s in spatial)
    if tuple(spatial) != tuple(source[1:]):
        text += f" (area-downsampled from {'x'.join(str(s) for s in source[1:])})"
    return text + f", {channels} channel{'s' if channels != 1 else ''}"


def evaluate_baseline(
    workdir: Path,
    model_id: str,
    oof: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Fit the pixel baseline on the evaluation's folds and score it beside the model.

    ``model_id`` names one fold model: its card gives the preprocessing config, so the baseline sees
    the inputs the models saw (from the cache; anything missing there is computed). ``oof`` and
    ``test`` are the model's pooled predictions (``scan_id``, ``patient_id``, ``label``, ``fold`` for
    OOF, ``prob_<class>``). Returns the ``baseline`` block, or ``{"note": ...}`` when none can be fitted.
    """
    if len(classes) != 2:
        return {"note": "the pixel baseline is computed for binary tasks only"}
    wd = Workdir(workdir)
    card_path = wd.model(model_id).card
    if not card_path.exists():
        return {"note": f"no model card for {model_id}: the baseline needs the fold models' preprocessing config"}
    from pipeline.inference import preprocess_config_from_card  # the model stack, only where a card exists

    pre: PreprocessConfig = preprocess_config_from_card(json.loads(card_path.read_text()))
    catalog = pd.read_parquet(wd.catalog)
    wanted = pd.concat([oof["scan_id"], test["scan_id"]], ignore_index=True)
    scans = catalog[catalog["scan_id"].isin(set(wanted))]
    if len(scans) != wanted.nunique():
        return {"note": "some evaluated scans are no longer in the catalogue: the baseline was not fitted"}
    paths = preprocess_catalog(workdir, pre, scans=scans).index.set_index("scan_id")["cache_path"]
    x_oof = pixel_features([workdir / paths[s] for s in oof["scan_id"]])
    x_test = pixel_features([workdir / paths[s] for s in test["scan_id"]]) if len(test) else np.zeros((0, 1))
    y_oof, _ = binary_target(oof, classes)
    try:
        predictions = fit_baseline(x_oof, y_oof, oof["fold"].to_numpy(), x_test)
    except ValueError as error:
        return {"note": f"the pixel baseline was not fitted: {error}"}
    source = np.load(workdir / paths[oof["scan_id"].iloc[0]], mmap_mode="r").shape
    described = _described(source)
    block = baseline_metrics(oof, test, classes, predictions, described, n_resamples, seed, level)
    log.info("pixel baseline (%s): %s", described, block["statement"])
    return block
