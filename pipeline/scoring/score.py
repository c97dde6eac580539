"""Scoring catalogued scans with the champion: probabilities, decisions, GradCAM overlays.

The champion is the registry's champion version: its fold models' mean probability (the ensemble the
operating point was applied to on the test set), its preprocessing config and its pre-specified
threshold. ``W/scoring/scores.parquet`` holds one row per (scan, model version): pseudonymous ids,
the positive-class probability, the decision, the threshold and the version. A scan already scored
by the current champion is skipped; a new champion scores it again (the old row stays, for audit).
``W/scoring/overlays/<scan_id>_<version>.png`` is the ensemble's GradCAM over the scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import UserInputError
from pipeline.explain.attribution import attribute, importance
from pipeline.explain.render import ScanOverlay
from pipeline.inference import LoadedModel, load_model, predict_probabilities
from pipeline.preprocess import preprocess_catalog
from pipeline.registry import Registry
from pipeline.storage import read_parquet, write_bytes_if_changed, write_parquet_if_changed

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["scan_id", "patient_id", "study_id", "probability", "decision", "threshold", "model_version"]


@dataclass(frozen=True)
class Champion:
    version: str
    models: list[LoadedModel]
    threshold: float
    classes: list[str]


@dataclass(frozen=True)
class ScoreResult:
    scores: pd.DataFrame  # rows written in this call
    n_skipped: int
    table: Path


def load_champion(workdir: Path, device: str = "auto") -> Champion:
    """The registry's champion, ready to score; a clear error when there is none."""
    registry = Registry(workdir)
    version = registry.champion()
    if version is None:
        raise UserInputError(f"no champion in {registry.root}: promote a model version first")
    record = registry.entry(version).record
    folder = registry.version_dir(version)
    models = [load_model(folder / "models" / model_id, device) for model_id in record["model_ids"]]
    return Champion(version, models, float(record["operating_point"]["threshold"]), list(record["classes"]))


def score_scans(workdir: Path, scans: pd.DataFrame, champion: Champion | None = None, overlays: bool = True) -> ScoreResult:
    """Score catalogue rows ``scans`` (labels not needed) unless the champion already scored them."""
    champion = champion or load_champion(workdir)
    table_path = workdir / "scoring" / "scores.parquet"
    existing = read_parquet(table_path)
    done = set() if existing is None else set(existing.loc[existing["model_version"] == champion.version, "scan_id"])
    todo = scans[~scans["scan_id"].isin(done)]
    if todo.empty:
        return ScoreResult(pd.DataFrame(columns=SCORE_COLUMNS), len(scans), table_path)
    pre = champion.models[0].preprocess
    index = preprocess_catalog(workdir, pre, scans=todo.assign(label=0)).index
    probabilities = np.mean([predict_probabilities(m, workdir, index) for m in champion.models], axis=0)
    positive = champion.classes[-1]
    p = probabilities[:, champion.models[0].classes.index(int(positive))]
    study = todo.set_index("scan_id")["study_id"]
    rows = pd.DataFrame({"scan_id": index["scan_id"], "patient_id": index["patient_id"],
                         "study_id": [study[s] for s in index["scan_id"]], "probability": p,
                         "decision": np.where(p >= champion.threshold, positive, champion.classes[0]),
                         "threshold": champion.threshold, "model_version": champion.version})
    table = rows if existing is None else pd.concat([existing, rows], ignore_index=True)
    write_parquet_if_changed(table_path, table.sort_values(["scan_id", "model_version"]).reset_index(drop=True))
    if overlays:
        catalog_rows = todo.set_index("scan_id")
        for row, score in zip(index.itertuples(index=False), p):
            _overlay(workdir, champion, row.scan_id, workdir / row.cache_path, catalog_rows.loc[row.scan_id], float(score))
    log.info("scored %d scans with %s (%d already scored)", len(rows), champion.version, len(scans) - len(todo))
    return ScoreResult(rows, len(scans) - len(todo), table_path)


def _overlay(workdir: Path, champion: Champion, scan_id: str, cache: Path, scan: pd.Series, p: float) -> None:
    x = torch.from_numpy(np.load(cache))[None]
    target = champion.models[0].classes.index(int(champion.classes[-1]))
    signed = np.mean([attribute(m.model, x.to(m.device.device), target, "gradcam").signed for m in champion.models], axis=0)
    pre = champion.models[0].preprocess
    overlay = ScanOverlay.load(workdir / scan["volume_path"], pre.effective(scan["modality"], int(scan["dims"])))
    title = f"p={p:.3f} (threshold {champion.threshold:.3f}), GradCAM, model {champion.version}"
    png, _, _ = overlay.render(importance(signed, "gradcam"), title)
    write_bytes_if_changed(workdir / "scoring" / "overlays" / f"{scan_id}_{champion.version}.png", png)

