"""Training one cross-validation fold and scoring what it never saw.

Fold ``k``'s model trains on the other folds (early stopping on a seeded patient-grouped share of
them; the trainer fits class weights on its training scans only) and then predicts fold ``k``
(out-of-fold), the held-out test set, and the other folds' scans it trained on (role ``insample``:
only for the fold ensemble's spread on out-of-fold scans, :mod:`pipeline.evaluate.calibrated`; never
for a metric). Results: ``W/evaluation/fold_<k>/predictions.parquet`` (``scan_id``, ``patient_id``,
``label``, ``fold`` (the scan's fold), ``role`` = ``oof`` | ``test`` | ``insample``, ``prob_<class>``)
and ``fold.json``, which records the model, its settings and the fold assignment it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import probability_column
from pipeline.evaluate.folds import Folds, load_folds
from pipeline.evaluate.splits import TEST
from pipeline.inference import load_model, predict_probabilities
from pipeline.layout import ModelFiles, Workdir
from pipeline.locking import writes_workdir
from pipeline.preprocess import PreprocessConfig, preprocess_catalog
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.distributed import DistributedSettings
from pipeline.storage import (
    sha256_file,
    write_bytes_if_changed,
    write_parquet_if_changed,
)
from pipeline.train import TrainConfig, TrainResult, train
from pipeline.train.distributed import join_world, on_main

module_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldRun:
    fold: int
    model_id: str
    model_dir: Path
    n_oof: int
    n_test: int
    best_val_auroc: float | None
    predicted: bool  # False when up-to-date predictions were reused


def settings_hash(cfg: TrainConfig, pre: PreprocessConfig, aug: AugmentConfig) -> str:
    """What every fold of one evaluation must share: training, preprocessing and augmentation settings."""
    payload = json.dumps([cfg.identity(), asdict(pre), asdict(aug)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@writes_workdir("train")
def train_fold(
    workdir: Path,
    fold: int,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig = AugmentConfig(),
    folds: Folds | None = None,
    progress: bool = False,
    log: logging.Logger | Any = module_log,
    dist: DistributedSettings = DistributedSettings(),
) -> FoldRun:
    """Train (or resume) fold ``fold``'s model and write its out-of-fold and test predictions.

    Under torchrun every process calls this: they train together, rank 0 predicts, and all return its result.
    """
    world, _ = join_world(cfg.device, cfg.deterministic, dist.collective_timeout)
    folds = folds or on_main(world, lambda: load_folds(workdir))
    if not 0 <= fold < folds.settings.n_folds:
        raise UserInputError(f"fold {fold} does not exist: the assignment has folds 0..{folds.settings.n_folds - 1}")
    if pre.dims != folds.settings.dims:
        raise UserInputError(f"the folds were made for {folds.settings.dims}D models, not {pre.dims}D")
    catalog = pd.read_parquet(Workdir(workdir).catalog)
    scans = catalog.merge(folds.frame[["scan_id", "fold"]], on="scan_id", how="inner")
    training = scans[(scans["fold"] != fold) & (scans["fold"] != TEST)].drop(columns="fold")
    result = train(workdir, cfg, pre, aug, resume=True, scans=training, progress=progress, log=log, dist=dist)
    if not result.completed:
        raise UserInputError(f"fold {fold}'s training stopped before it finished: run it again to resume")
    return on_main(world, lambda: _predict_fold(workdir, fold, cfg, pre, aug, folds, scans, training, result, log))


def _predict_fold(
    workdir: Path,
    fold: int,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig,
    folds: Folds,
    scans: pd.DataFrame,
    training: pd.DataFrame,
    result: TrainResult,
    log: logging.Logger | Any,
) -> FoldRun:
    """Write fold ``fold``'s record and its out-of-fold and test predictions (unless up to date)."""
    model_id = result.card["model_id"]
    record = {
        "fold": fold,
        "model_id": model_id,
        "folds_hash": folds.folds_hash,
        "settings_hash": settings_hash(cfg, pre, aug),
        "weights_sha256": sha256_file(ModelFiles(result.model_dir).weights),
        "classes": result.card["class_names"],
        "best_val_auroc": result.card["validation"]["best_auroc"],
        "n_train": len(training),
        "n_train_patients": int(training["patient_id"].nunique()),
        "predicted_roles": ["oof", "test", "insample"],
    }
    target = Workdir(workdir).fold(fold)
    scored = scans  # every scan of the assignment: its own fold, the test set and (in-sample) the others
    previous = target.record
    if previous.exists() and target.predictions.exists() and json.loads(previous.read_text()) == record:
        log.info("fold %d: model %s and its predictions are up to date", fold, model_id)
        return FoldRun(
            fold,
            model_id,
            result.model_dir,
            int((scored["fold"] == fold).sum()),
            int((scored["fold"] == TEST).sum()),
            record["best_val_auroc"],
            predicted=False,
        )
    index = preprocess_catalog(workdir, pre, scans=scored.drop(columns="fold")).index
    index = index.merge(scored[["scan_id", "fold"]], on="scan_id")
    loaded = load_model(result.model_dir, cfg.device)
    probabilities = predict_probabilities(loaded, workdir, index, batch_size=max(cfg.batch_size, 32))
    table = pd.DataFrame(
        {
            "scan_id": index["scan_id"],
            "patient_id": index["patient_id"],
            "label": index["label"].astype("int64"),
            "fold": index["fold"].astype("int64"),
            "role": ["test" if f == TEST else "oof" if f == fold else "insample" for f in index["fold"]],
        }
    )
    for j, name in enumerate(loaded.classes):
        table[probability_column(name)] = probabilities[:, j]
    write_parquet_if_changed(target.predictions, table.sort_values("scan_id").reset_index(drop=True))
    write_bytes_if_changed(previous, json.dumps(record, indent=2).encode())
    n_oof, n_test = int((table["role"] == "oof").sum()), int((table["role"] == "test").sum())
    log.info(
        "fold %d: model %s scored %d out-of-fold, %d test and %d in-sample scans",
        fold,
        model_id,
        n_oof,
        n_test,
        len(table) - n_oof - n_test,
    )
    return FoldRun(fold, model_id, result.model_dir, n_oof, n_test, record["best_val_auroc"], predicted=True)
