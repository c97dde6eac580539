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
from pipeline.evaluate.splits import TEST, assign_folds, check_folds
from pipeline.preprocess import PreprocessConfig
from pipeline.preprocess.cache import select_scans
from pipeline.storage import Workdir, write_bytes_if_changed, write_parquet_if_changed

log = logging.getLogger(__name__)
FOLD_COLUMNS = ["scan_id", "patient_id", "label", "split", "fold"]


@dataclass(frozen=True)
class CVSettings:
    """K folds (``n_folds``), a held-out test set (the catalogue's ``test`` split, else a patient-grouped
    ``test_fraction``), for models of ``dims`` (which decides which scans take part), seeded."""

    n_folds: int = 5
    test_fraction: float = 0.2
    seed: int = 0
    dims: int = 2

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise UserInputError("cross-validation needs at least 2 folds")
        if not 0 < self.test_fraction < 1:
            raise UserInputError("test fraction must be between 0 and 1")
        if self.dims not in (2, 3):
            raise UserInputError("dims must be 2 or 3")


@dataclass(frozen=True)
class Folds:
    frame: pd.DataFrame
    settings: CVSettings
    folds_hash: str
    test_source: str
    problems: list[str]
    written: bool = False

    def rows(self, fold: int) -> pd.DataFrame:
        return self.frame[self.frame["fold"] == fold]

    @property
    def test(self) -> pd.DataFrame:
        return self.rows(TEST)


def evaluation_dir(workdir: Path) -> Path:
    return workdir / "evaluation"


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
    test_source = ("catalogue split 'test'" if (scans["split"] == "test").any()
                   else f"patient-grouped random {settings.test_fraction:.0%} (seed {settings.seed})")
    folds_hash = _hash(frame)
    problems = check_folds(frame)
    folder = evaluation_dir(wd.root)
    folder.mkdir(parents=True, exist_ok=True)
    written = write_parquet_if_changed(folder / "folds.parquet", frame)
    meta = {"settings": asdict(settings), "test_source": test_source, "folds_hash": folds_hash, "problems": problems,
            "counts": fold_counts(frame)}
    written |= write_bytes_if_changed(folder / "folds.json", json.dumps(meta, indent=2).encode())
    for problem in problems:
        log.warning("folds: %s", problem)
    return Folds(frame, settings, folds_hash, test_source, problems, written)


def load_folds(workdir: Path) -> Folds:
    """The persisted fold assignment, or a clear error when there is none."""
    folder = evaluation_dir(workdir)
    if not (folder / "folds.parquet").exists() or not (folder / "folds.json").exists():
        raise UserInputError(f"no fold assignment in {folder}: materialise cv_folds or run `scanlens evaluate`")
    meta = json.loads((folder / "folds.json").read_text())
    frame = pd.read_parquet(folder / "folds.parquet")
    return Folds(frame, CVSettings(**meta["settings"]), meta["folds_hash"], meta["test_source"], meta["problems"])


def fold_counts(frame: pd.DataFrame) -> dict[str, Any]:
    """Scans and patients per partition and class: {"test" | "fold_k": {"scans": {label: n}, "patients": n}}."""
    out: dict[str, Any] = {}
    for fold, part in frame.groupby("fold"):
        name = "test" if fold == TEST else f"fold_{fold}"
        out[name] = {"scans": {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()},
                     "patients": int(part["patient_id"].nunique())}
    return out
