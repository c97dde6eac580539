"""Preprocessing: MONAI chains by modality, 2D views of 3D scans, the cache, augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.preprocess import AugmentConfig, PreprocessConfig, build_augmentation, preprocess_catalog
from pipeline.preprocess.augment import augment, stream_seed
from pipeline.preprocess.transforms import KEY, To2DViewd, deterministic_transforms


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def test_ct_window_maps_hounsfield_units_to_unit_range(tmp_path: Path) -> None:
    data = np.full((8, 8, 8), -1000.0, np.float32)
    data[2:6, 2:6, 2:6] = 40.0  # soft tissue at the window centre
    path = _nifti(tmp_path / "ct.nii", data, np.eye(4))
    params = PreprocessConfig(dims=3, input_size=(8, 8, 8)).effective("CT", 3)
    out = deterministic_transforms(params)({KEY: path})[KEY]
    assert params["window"] == [40.0, 400.0] and out.shape == (1, 8, 8, 8) and out.dtype == np.float32
    assert out.min() == 0.0 and np.isclose(out.max(), 0.5)


@pytest.mark.parametrize(("modality", "mode"), [("CT", "ct_window"), ("MR", "percentile"), ("PT", "percentile"), ("US", "minmax"), (None, "minmax")])
def test_auto_intensity_by_modality(modality: str | None, mode: str) -> None:
    assert PreprocessConfig().effective(modality, 2)["intensity"] == mode


def test_stored_orientation_does_not_change_the_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.random((6, 7, 8)).astype(np.float32)
    ras = _nifti(tmp_path / "ras.nii", data, np.diag([2.0, 1.0, 1.5, 1.0]))
    lps = _nifti(tmp_path / "lps.nii", data[::-1, ::-1, :].copy(), np.diag([-2.0, -1.0, 1.5, 1.0]) @ _shift(5, 6))
    params = PreprocessConfig(dims=3, input_size=(8, 8, 8), intensity="minmax").effective(None, 3)
    chain = deterministic_transforms(params)
    np.testing.assert_allclose(chain({KEY: ras})[KEY], chain({KEY: lps})[KEY], atol=1e-6)


def _shift(x: int, y: int) -> np.ndarray:
    shift = np.eye(4)
    shift[0, 3], shift[1, 3] = -x, -y
    return shift


def test_2d_views_of_a_volume() -> None:
    volume = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    centre = To2DViewd(KEY, "centre")({KEY: volume})[KEY]
    mip = To2DViewd(KEY, "mip")({KEY: volume})[KEY]
    assert torch.equal(centre, volume[..., 2]) and torch.equal(mip, volume[..., 4])
    flat = torch.ones(1, 4, 1, 6)  # a 2D scan stored with a singleton axis
    assert To2DViewd(KEY, "2.5d", channels_for_2d=3)({KEY: flat})[KEY].shape == (3, 4, 6)


def test_longest_side_is_resized_then_padded(tmp_path: Path) -> None:
    data = np.ones((40, 20, 1), np.float32) + 1.0
    data[0, 0, 0] = 0.0  # min-max needs a range
    path = _nifti(tmp_path / "wide.nii", data, np.eye(4))
    out = deterministic_transforms(PreprocessConfig(dims=2, input_size=(16, 16), intensity="minmax").effective("US", 2))({KEY: path})[KEY]
    assert out.shape == (1, 16, 16)
    assert out[0, :, 0].sum() == 0 and out[0, 8, 4:12].all()  # aspect kept: padding on the short side


def test_cache_recomputes_only_what_a_config_change_affects(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir, ignore=shutil.ignore_patterns("cache", "preprocessed"))
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    n_ct = int((catalog["modality"] == "CT").sum())
    config = PreprocessConfig(dims=2, input_size=(16, 16))
    first = preprocess_catalog(workdir, config, scans=catalog)
    assert first.n_computed == len(catalog) - _duplicates(catalog) and len(first.index) == len(catalog)
    again = preprocess_catalog(workdir, config, scans=catalog)
    assert again.n_computed == 0 and again.index.equals(first.index)
    lung = preprocess_catalog(workdir, PreprocessConfig(dims=2, input_size=(16, 16), ct_window="lung"), scans=catalog)
    assert lung.n_computed == n_ct > 0  # ultrasound outputs do not depend on the CT window
    array = np.load(workdir / first.index["cache_path"][0])
    assert array.shape == (1, 16, 16) and 0.0 <= array.min() and array.max() <= 1.0


def _duplicates(catalog: pd.DataFrame) -> int:
    return len(catalog) - catalog["content_hash"].nunique()


def test_augmentation_is_seeded_and_off_when_disabled() -> None:
    image = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    transform = build_augmentation(AugmentConfig(flip_prob=1.0, affine_prob=1.0), dims=2)
    draws = []
    for seed in (stream_seed(0, 5), stream_seed(0, 5), stream_seed(0, 6)):
        transform.set_random_state(seed=seed)
        draws.append(augment(transform, image))
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], image)
    assert build_augmentation(AugmentConfig(enabled=False), dims=2) is None


def test_bad_configs_are_user_errors() -> None:
    with pytest.raises(UserInputError):
        PreprocessConfig(dims=3, input_size=(32, 32))
    with pytest.raises(UserInputError):
        PreprocessConfig(ct_window="wide")
    assert PreprocessConfig(ct_window="50,350").window() == (50.0, 350.0)
