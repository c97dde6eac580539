"""``split_train_val``: the catalogue's splits when it has them, else a seeded patient-grouped split;
``CachedScans``: one augmentation stream per process and worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.train.data import split_train_val


def _index(n_patients: int = 40, splits: tuple[str, ...] = ("unassigned",), seed: int = 0) -> pd.DataFrame:
    """1-3 scans per patient, one label per patient (balanced), splits assigned per patient in turn."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(int(rng.integers(1, 4))):
            rows.append({"scan_id": f"p{p}_s{s}", "patient_id": f"p{p}", "label": p % 2, "split": splits[p % len(splits)]})
    return pd.DataFrame(rows)


def _patients(frame: pd.DataFrame) -> set[str]:
    return set(frame["patient_id"])


def test_the_catalogues_train_and_val_splits_are_used_as_they_are() -> None:
    index = _index(splits=("train", "train", "val", "test"))
    split = split_train_val(index, val_fraction=0.5, seed=0)
    assert split.source == "catalogue"
    assert split.train.equals(index[index["split"] == "train"]) and split.val.equals(index[index["split"] == "val"])


def test_without_a_val_split_patients_are_split_grouped_and_test_scans_stay_out() -> None:
    index = _index(n_patients=60, splits=("train", "train", "test"))
    split = split_train_val(index, val_fraction=0.2, seed=0)
    assert split.source == "patient-grouped random split"
    assert not _patients(split.train) & _patients(split.val)  # no patient on both sides
    pool = index[index["split"] != "test"]
    assert sorted(pd.concat([split.train, split.val])["scan_id"]) == sorted(pool["scan_id"])  # all of it, test excluded
    assert 0.1 < split.val["patient_id"].nunique() / pool["patient_id"].nunique() < 0.3  # about one fold in five
    assert set(split.val["label"]) == {0, 1}  # stratified: both classes validate


def test_without_any_test_split_the_whole_index_is_the_pool() -> None:
    index = _index(n_patients=20)
    split = split_train_val(index, val_fraction=0.5, seed=0)
    assert len(split.train) + len(split.val) == len(index)
    assert 0.3 < split.val["patient_id"].nunique() / 20 < 0.7  # two folds: about half


def test_only_a_val_split_is_not_enough_for_the_catalogue_route() -> None:
    index = _index(n_patients=30, splits=("val", "test", "test"))
    split = split_train_val(index, val_fraction=0.5, seed=0)
    assert split.source == "patient-grouped random split"
    assert set(pd.concat([split.train, split.val])["split"]) == {"val"}


def test_the_split_is_seeded() -> None:
    index = _index(n_patients=60)
    first, again, other = (split_train_val(index, 0.25, seed) for seed in (3, 3, 4))
    assert first.val["scan_id"].tolist() == again.val["scan_id"].tolist()
    assert first.val["scan_id"].tolist() != other.val["scan_id"].tolist()


@pytest.mark.parametrize("val_fraction", [0.9, 0.5])
def test_a_large_val_fraction_still_makes_two_folds(val_fraction: float) -> None:
    split = split_train_val(_index(n_patients=40), val_fraction, seed=0)
    assert len(split.train) and len(split.val)
    assert 0.3 < split.val["patient_id"].nunique() / 40 < 0.7


def test_too_few_patients_is_a_user_error() -> None:
    index = _index(n_patients=3, splits=("train", "train", "test"))  # two patients left for five folds
    with pytest.raises(UserInputError, match="too few patients"):
        split_train_val(index, val_fraction=0.2, seed=0)


def test_each_process_of_a_distributed_run_draws_its_own_reproducible_augmentation(tmp_path: Path) -> None:
    """Stream ``rank * (workers + 1) + worker``: rank 0 draws what one process draws, rank 1 something else."""
    from pipeline.preprocess import AugmentConfig, build_augmentation
    from pipeline.train.data import CachedScans

    image = np.random.default_rng(0).random((1, 16, 16), dtype=np.float32)
    np.save(tmp_path / "a.npy", image)
    index = pd.DataFrame({"cache_path": ["a.npy"], "label": [1]})
    always = AugmentConfig(flip_prob=1.0, affine_prob=1.0, intensity_prob=1.0)

    def draw(first_stream: int, epoch: int) -> np.ndarray:
        scans = CachedScans(tmp_path, index, [0, 1], build_augmentation(always, 2), seed=3, first_stream=first_stream)
        scans.set_epoch(epoch)
        return scans[0][0].numpy()

    rank0, rank1 = draw(0, epoch=2), draw(1, epoch=2)
    assert np.array_equal(rank0, draw(0, epoch=2)) and np.array_equal(rank1, draw(1, epoch=2))  # reproducible
    assert not np.allclose(rank0, rank1)  # distinct per rank
    assert not np.allclose(rank0, draw(0, epoch=3))  # and per epoch
