"""The persisted fold assignment: ``W/evaluation/folds.parquet`` and ``folds.json``.

``folds.parquet`` has one row per labelled scan the model kind can read: ``scan_id``,
``patient_id`` (pseudonymous), ``label``, the catalogue's ``split`` and ``fold`` (``-1`` = held-out
test set, ``0..K-1`` = validation fold). ``folds.json`` records the settings, where the test set came
from, and ``folds_hash``, which every fold model records so that stale ones are caught.
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
from pipeline.evaluate.splits import TEST, FoldProblem, assign_folds, check_folds
from pipeline.layout import Workdir
from pipeline.preprocess import PreprocessConfig
from pipeline.preprocess.cache import select_scans
from pipeline.settings.evaluate import CVSettings
from pipeline.storage import write_bytes_if_changed, write_parquet_if_changed

log = logging.getLogger(__name__)
FOLD_COLUMNS = ["scan_id", "patient_id", "label", "split", "fold"]


@dataclass(frozen=True)
class Folds:
    frame: pd.DataFrame
    settings: CVSettings
    folds_hash: str
    test_source: str
    problems: list[FoldProblem]
    written: bool = False

    def rows(self, fold: int) -> pd.DataFrame:
        return self.frame[self.frame["fold"] == fold]

    @property
    def test(self) -> pd.DataFrame:
        return self.rows(TEST)


def _hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in frame.sort_values("scan_id").itertuples(index=False):
        digest.update(f"{row.scan_id}|{row.patient_id}|{row.label}|{row.fold}\n".encode())
    return digest.hexdigest()


def make_folds(workdir: Path, settings: CVSettings) -> Folds:
    """Assign and persist folds for the catalogue's labelled scans. Unchanged input rewrites nothing."""
    wd = Workdir(workdir)
    if not wd.catalog.exists():
        raise UserInputError(f"no catalogue in {workdir}: run ingest first")
    edge = (1,) * settings.dims
    scans = select_scans(pd.read_parquet(wd.catalog), PreprocessConfig(dims=settings.dims, input_size=edge))
    if scans.empty:
        raise UserInputError(f"no labelled scans usable by a {settings.dims}D model in {workdir}")
    assigned = assign_folds(scans, settings.n_folds, settings.test_fraction, settings.seed)
    frame = assigned[FOLD_COLUMNS].sort_values("scan_id").reset_index(drop=True)
    frame["label"] = frame["label"].astype("int64")
    frame["fold"] = frame["fold"].astype("int64")
    test_source = (
        "catalogue split 'test'"
        if (scans["split"] == "test").any()
        else f"patient-grouped random {settings.test_fraction:.0%} (seed {settings.seed})"
    )
    folds_hash = _hash(frame)
    problems = check_folds(frame)
    wd.evaluation.mkdir(parents=True, exist_ok=True)
    written = write_parquet_if_changed(wd.folds_table, frame)
    meta = {
        "settings": asdict(settings),
        "test_source": test_source,
        "folds_hash": folds_hash,
        "problems": [str(p) for p in problems],
        "counts": fold_counts(frame),
    }
    written |= write_bytes_if_changed(wd.folds_meta, json.dumps(meta, indent=2).encode())
    for problem in problems:
        log.warning("folds: %s", problem)
    return Folds(frame, settings, folds_hash, test_source, problems, written)


def load_folds(workdir: Path) -> Folds:
    """The persisted fold assignment, or a clear error when there is none."""
    wd = Workdir(workdir)
    if not wd.folds_table.exists() or not wd.folds_meta.exists():
        raise UserInputError(f"no fold assignment in {wd.evaluation}: materialise cv_folds or run `scanlens evaluate`")
    meta = json.loads(wd.folds_meta.read_text())
    frame = pd.read_parquet(wd.folds_table)
    return Folds(
        frame,
        CVSettings(**meta["settings"]),
        meta["folds_hash"],
        meta["test_source"],
        [FoldProblem.parse(p) for p in meta["problems"]],
    )


def fold_counts(frame: pd.DataFrame) -> dict[str, Any]:
    """Scans and patients per partition and class: {"test" | "fold_k": {"scans": {label: n}, "patients": n}}."""
    out: dict[str, Any] = {}
    for fold, part in frame.groupby("fold"):
        name = "test" if fold == TEST else f"fold_{fold}"
        out[name] = {
            "scans": {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()},
            "patients": int(part["patient_id"].nunique()),
        }
    return out
