"""Preprocess catalogued scans once: results cached as ``.npy`` keyed by content hash x parameters.

``W/cache/preprocess/<key>.npy`` holds one float32 array ``(C, *input_size)``; the key hashes the
scan's content hash and the parameters that apply to it (:meth:`PreprocessConfig.effective`).
``W/preprocessed/<config hash>.parquet`` indexes a run: scan_id, patient_id, label, split, path.
Re-running with the same config computes nothing; a changed config recomputes only what it affects.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import UserInputError
from pipeline.layout import Workdir
from pipeline.locking import writes_workdir
from pipeline.parallel import parallel_map
from pipeline.preprocess.config import PreprocessConfig, cache_key
from pipeline.preprocess.transforms import KEY, deterministic_transforms
from pipeline.storage import atomic_write_bytes, write_parquet_if_changed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessResult:
    index_path: Path | None  # None for a subset of the catalogue (only the full index is written)
    index: pd.DataFrame
    n_computed: int
    n_cached: int
    config_hash: str


def _compute(task: tuple[str, str, dict]) -> tuple[int, ...]:
    volume_path, out_path, params = task
    array = deterministic_transforms(params)({KEY: volume_path})[KEY]
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
    atomic_write_bytes(Path(out_path), buffer.getvalue())
    return tuple(array.shape)


def select_scans(catalog: pd.DataFrame, config: PreprocessConfig) -> pd.DataFrame:
    """Labelled scans a model of ``config.dims`` can read: a 3D model needs 3D scans; a 2D model
    takes 2D scans when there are any, otherwise 3D scans through the slice strategy."""
    labelled = catalog[catalog["label"].notna()]
    if config.dims == 3:
        chosen = labelled[labelled["dims"] == 3]
    else:
        chosen = labelled[labelled["dims"] == 2] if (labelled["dims"] == 2).any() else labelled
    return chosen.reset_index(drop=True)


@writes_workdir("preprocess")
def preprocess_catalog(
    workdir: Path, config: PreprocessConfig, scans: pd.DataFrame | None = None, workers: int | None = None
) -> PreprocessResult:
    """Preprocess ``scans`` (default: :func:`select_scans` of the catalogue) into the cache.

    The index table ``W/preprocessed/<config hash>.parquet`` is written for the whole catalogue only;
    a subset (a cross-validation fold) is returned in memory.
    """
    wd = Workdir(workdir)
    whole_catalogue = scans is None
    if scans is None:
        if not wd.catalog.exists():
            raise UserInputError(f"no catalogue in {workdir}: run ingest first")
        scans = select_scans(pd.read_parquet(wd.catalog), config)
    if scans.empty:
        raise UserInputError(f"no labelled scans usable by a {config.dims}D model in {workdir}")
    wd.preprocess_cache.mkdir(parents=True, exist_ok=True)
    keys, tasks = [], []
    for row in scans.itertuples(index=False):
        params = config.effective(row.modality, int(row.dims))
        key = cache_key(row.content_hash, params)
        keys.append(key)
        target = wd.cached_input(key)
        if not target.exists():
            tasks.append((str(wd.root / row.volume_path), str(target), params))
    unique = list({t[1]: t for t in tasks}.values())
    parallel_map(_compute, unique, workers or os.cpu_count() or 1, "preprocessing", chunksize=4)
    index = (
        pd.DataFrame(
            {
                "scan_id": scans["scan_id"].to_numpy(),
                "patient_id": scans["patient_id"].to_numpy(),
                "label": scans["label"].astype("int64").to_numpy(),
                "split": scans["split"].to_numpy(),
                "modality": scans["modality"].to_numpy(),
                "content_hash": scans["content_hash"].to_numpy(),
                "cache_path": [wd.cached_input_ref(k) for k in keys],  # relative to W, POSIX separators
            }
        )
        .sort_values("scan_id")
        .reset_index(drop=True)
    )
    config_hash = config.config_hash()
    index_path = None
    if whole_catalogue:
        index_path = wd.preprocessed_index(config_hash)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_if_changed(index_path, index)
    log.info("preprocess: %d scans, %d computed, %d from cache", len(index), len(unique), len(index) - len(unique))
    return PreprocessResult(index_path, index, len(unique), len(index) - len(unique), config_hash)
