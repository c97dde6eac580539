"""Datasets over the preprocessing cache, and the train/validation split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset

from pipeline.errors import UserInputError
from pipeline.preprocess.augment import augment, stream_seed


class CachedScans(Dataset):
    """Preprocessed arrays with integer class targets; augmentation seeded per (seed, epoch, stream).

    Each process of a distributed run and each of its data-loader workers draws its own stream:
    stream ``rank * (num_workers + 1) + worker`` (worker 0 is the process itself), so rank 0 of a
    distributed run draws what a single process draws, and no two streams repeat each other.
    """

    def __init__(
        self,
        workdir: Path,
        index: pd.DataFrame,
        classes: list[int],
        transform: Compose | None = None,
        seed: int = 0,
        first_stream: int = 0,
    ) -> None:
        self.paths = [workdir / p for p in index["cache_path"]]
        lookup = {c: i for i, c in enumerate(classes)}
        self.targets = torch.tensor([lookup[int(v)] for v in index["label"]], dtype=torch.long)
        self.transform = transform
        self.seed = seed
        self.first_stream = first_stream
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.reseed(worker=0)

    def reseed(self, worker: int) -> None:
        if self.transform is not None:
            self.transform.set_random_state(seed=stream_seed(self.seed, self.epoch, self.first_stream + worker))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.load(self.paths[item])
        image = augment(self.transform, image)
        return torch.from_numpy(np.ascontiguousarray(image)), self.targets[item]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker draws its own augmentation stream for the epoch."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, CachedScans):
        torch.set_num_threads(1)
        info.dataset.reseed(worker=worker_id + 1)


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    source: str  # "catalogue" or "patient-grouped random split"


def split_train_val(index: pd.DataFrame, val_fraction: float, seed: int) -> Split:
    """Use the catalogue's ``train``/``val`` splits; without them, a seeded patient-grouped split."""
    if (index["split"] == "train").any() and (index["split"] == "val").any():
        return Split(index[index["split"] == "train"], index[index["split"] == "val"], "catalogue")
    pool = index[index["split"] != "test"] if (index["split"] == "test").any() else index
    n_folds = max(2, round(1 / val_fraction))
    if pool["patient_id"].nunique() < n_folds:
        raise UserInputError(f"too few patients ({pool['patient_id'].nunique()}) for a validation split")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    train_idx, val_idx = next(splitter.split(pool, pool["label"], groups=pool["patient_id"]))
    return Split(pool.iloc[train_idx], pool.iloc[val_idx], "patient-grouped random split")


@dataclass(frozen=True)
class TrainingData:
    """What one training run learns from: the split, the classes (catalogue label values, in the
    order of the output columns), the manifest hash of ``split`` (:func:`manifest_hash`), the
    preprocessing config's hash, and the model id they (with the settings) hash to."""

    model_id: str
    split: Split
    classes: list[int]
    manifest_hash: str
    preprocess_hash: str


def manifest_hash(frames: list[pd.DataFrame]) -> str:
    """Hash of exactly which scans (by content) with which labels trained and validated a model."""
    digest = hashlib.sha256()
    for name, frame in zip(("train", "val"), frames, strict=True):
        for row in frame.sort_values("scan_id").itertuples(index=False):
            digest.update(f"{name}|{row.scan_id}|{row.content_hash}|{row.label}\n".encode())
    return digest.hexdigest()
