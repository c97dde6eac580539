"""Scoring catalogued scans with the champion: probabilities, decisions, GradCAM overlays.

The champion is the registry's champion version: its fold models' mean probability (the ensemble the
operating point was applied to on the test set), its preprocessing config and its pre-specified
threshold. ``W/scoring/scores.parquet`` holds one row per (scan, model version): pseudonymous ids,
the positive-class probability, the decision, the threshold and the version (a folder of parts, one
per call: :mod:`pipeline.scoring.table`). A scan already scored by the current champion is skipped;
a new champion scores it again (the old row stays, for audit).
``W/scoring/overlays/<scan_id>_<version>.png`` is the ensemble's GradCAM over the scan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import positive_class
from pipeline.explain.attribution import attribute, importance
from pipeline.explain.render import ScanOverlay
from pipeline.inference import LoadedModel, load_model, predict_ensemble
from pipeline.layout import Workdir
from pipeline.locking import writes_workdir
from pipeline.preprocess import preprocess_catalog
from pipeline.registry import Registry
from pipeline.scoring.table import SCORE_COLUMNS, ScoresTable
from pipeline.storage import write_bytes_if_changed

log = logging.getLogger(__name__)
__all__ = ["SCORE_COLUMNS", "Champion", "ScoreResult", "load_champion", "score_scans"]


@dataclass(frozen=True)
class Champion:
    version: str
    models: list[LoadedModel]
    threshold: float
    classes: list[str]

    @property
    def dims(self) -> int:
        """2 or 3: the scans this champion reads (its preprocessing's spatial dimensions)."""
        return int(self.models[0].preprocess.dims)


@dataclass(frozen=True)
class ScoreResult:
    scores: pd.DataFrame  # rows written in this call
    n_skipped: int  # already scored by this champion
    table: Path
    n_incompatible: int = 0  # scans of other dimensions than the champion reads (not scored)
    #: wall seconds per phase: preprocess, inference, overlays, outputs, table (the append to the scores table)
    seconds: dict[str, float] = field(default_factory=dict)


def load_champion(workdir: Path, device: str = "auto") -> Champion:
    """The registry's champion, ready to score; a clear error when there is none."""
    registry = Registry(workdir)
    version = registry.champion()
    if version is None:
        raise UserInputError(f"no champion in {registry.root}: promote a model version first")
    record = registry.entry(version).record
    folder = Workdir(workdir).version(version)
    models = [load_model(folder.model(model_id).root, device) for model_id in record["model_ids"]]
    return Champion(version, models, float(record["operating_point"]["threshold"]), list(record["classes"]))


@writes_workdir("score")
def score_scans(
    workdir: Path,
    scans: pd.DataFrame,
    champion: Champion | None = None,
    overlays: bool = True,
    scan_root: Path | None = None,
    on_scored: Callable[[pd.DataFrame], None] | None = None,
    table: ScoresTable | None = None,
) -> ScoreResult:
    """Score catalogue rows ``scans`` (labels not needed) unless the champion already scored them.

    ``scan_root`` is the work folder the rows' ``volume_path`` is relative to (default ``workdir``;
    scoring an inbox study uses its own intake folder); their preprocessing cache goes there too.
    Scans of other dimensions than the champion reads are counted in ``n_incompatible``, not scored.
    ``on_scored(rows)`` runs after the overlays and before the rows join the table, so that what it
    writes (DICOM outputs) exists whenever the table says a scan is scored. ``table``: the scores
    table to check and append to, kept by a long-running scorer (it remembers what it has read).
    """
    champion = champion or load_champion(workdir)
    scan_root = scan_root or workdir
    table = table or ScoresTable(workdir)
    table_path = table.path
    compatible = scans[scans["dims"].astype(int) == champion.dims]
    clock = time.perf_counter()
    done = table.scored(champion.version, compatible["scan_id"])
    checked = time.perf_counter() - clock
    todo = compatible[~compatible["scan_id"].isin(done)]
    n_incompatible, n_skipped = len(scans) - len(compatible), len(compatible) - len(todo)
    if todo.empty:
        empty = pd.DataFrame(columns=SCORE_COLUMNS)
        return ScoreResult(empty, n_skipped, table_path, n_incompatible, {"table": checked})
    pre = champion.models[0].preprocess
    clock = time.perf_counter()
    index = preprocess_catalog(scan_root, pre, scans=todo.assign(label=0)).index
    seconds = {"preprocess": time.perf_counter() - clock}
    clock = time.perf_counter()
    probabilities = predict_ensemble(champion.models, scan_root, index)
    seconds["inference"] = time.perf_counter() - clock
    positive = positive_class(champion.classes)
    p = probabilities[:, champion.models[0].classes.index(int(positive))]
    study = todo.set_index("scan_id")["study_id"]
    rows = pd.DataFrame(
        {
            "scan_id": index["scan_id"],
            "patient_id": index["patient_id"],
            "study_id": [study[s] for s in index["scan_id"]],
            "probability": p,
            "decision": np.where(p >= champion.threshold, positive, champion.classes[0]),
            "threshold": champion.threshold,
            "model_version": champion.version,
        }
    )
    clock = time.perf_counter()
    if overlays:
        catalog_rows = todo.set_index("scan_id")
        for row, score in zip(index.itertuples(index=False), p, strict=True):
            _overlay(
                workdir,
                champion,
                row.scan_id,
                scan_root / row.cache_path,
                scan_root / catalog_rows.loc[row.scan_id, "volume_path"],
                catalog_rows.loc[row.scan_id],
                float(score),
            )
    seconds["overlays"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if on_scored is not None:
        on_scored(rows)
    seconds["outputs"] = time.perf_counter() - clock
    clock = time.perf_counter()
    written = table.append(rows)  # one part; concurrent scoring runs append in turn
    seconds["table"] = checked + time.perf_counter() - clock
    n_skipped += len(rows) - len(written)  # scored by another run meanwhile: its rows are in the table
    log.info(
        "scored %d scans with %s (%d already scored, %d of other dimensions)",
        len(written),
        champion.version,
        n_skipped,
        n_incompatible,
    )
    return ScoreResult(written.reset_index(drop=True), n_skipped, table_path, n_incompatible, seconds)


def _overlay(
    workdir: Path, champion: Champion, scan_id: str, cache: Path, volume: Path, scan: pd.Series, p: float
) -> None:
    x = torch.from_numpy(np.load(cache))[None]
    target = champion.models[0].classes.index(int(positive_class(champion.classes)))
    signed = np.mean(
        [attribute(m.model, x.to(m.device.device), target, "gradcam").signed for m in champion.models], axis=0
    )
    pre = champion.models[0].preprocess
    overlay = ScanOverlay.load(volume, pre.effective(scan["modality"], int(scan["dims"])))
    title = f"p={p:.3f} (threshold {champion.threshold:.3f})\nGradCAM, model {champion.version}"
    png, _, _ = overlay.render(importance(signed, "gradcam"), title)
    write_bytes_if_changed(Workdir(workdir).overlay(scan_id, champion.version), png)
