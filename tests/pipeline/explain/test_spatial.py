"""Model-input maps back onto the scan grid through the preprocessing chain's inverse."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.explain.spatial import map_to_scan
from pipeline.preprocess import PreprocessConfig
from pipeline.preprocess.transforms import KEY, deterministic_transforms

LPS = np.array([[-0.8, 0, 0, 12.0], [0, -1.1, 0, -3.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])  # stored L, P, S
BLOB = (5, 17, 4)  # stored voxel; slice 4 of 9 is the middle axial slice


def _scan(tmp_path: Path, shape: tuple[int, int, int] = (20, 24, 9)) -> Path:
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    i, j, k = BLOB
    data[i - 1:i + 2, j - 1:j + 2, k] = 50.0
    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(data, LPS), str(path))
    return path


CONFIGS = [PreprocessConfig(dims=2, input_size=(16, 20), slice_strategy=s, intensity="minmax") for s in ("centre", "mip", "2.5d")]
CONFIGS += [PreprocessConfig(dims=3, input_size=(8, 16, 12), intensity="minmax")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.dims}d-{c.slice_strategy}")
def test_the_model_input_maps_back_onto_the_scan_where_it_came_from(tmp_path: Path, config: PreprocessConfig) -> None:
    path = _scan(tmp_path)
    params = config.effective(None, 3)
    x = deterministic_transforms(params)({KEY: str(path)})[KEY]
    back, affine = map_to_scan(x.sum(0), path, params)  # a one-channel map, as attributions are
    assert back.shape == (20, 24, 9) and np.allclose(affine, LPS) and back.dtype == np.float32
    peak = np.unravel_index(int(np.argmax(back)), back.shape)
    assert abs(peak[0] - BLOB[0]) <= 1 and abs(peak[1] - BLOB[1]) <= 1  # not mirrored: orientation undone
    if config.dims == 3:
        assert abs(peak[2] - BLOB[2]) <= 1
    elif config.slice_strategy == "mip":
        assert np.allclose(back, back[..., :1])  # the projection, repeated along S
    else:
        assert not back[..., [0, 1, 2, 3, 5, 6, 7, 8]].any() and back[..., 4].any()  # the middle slice only


def test_a_2d_scan_map_gets_its_singleton_axis_back(tmp_path: Path) -> None:
    data = np.random.default_rng(1).random((16, 1, 12)).astype(np.float32)  # coronal; longest side = input: no resize
    path = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 1.0, 0.7, 1.0])), str(path))
    params = PreprocessConfig(dims=2, input_size=(16, 16), slice_strategy="2.5d", intensity="minmax").effective(None, 2)
    x = deterministic_transforms(params)({KEY: str(path)})[KEY]
    assert x.shape == (3, 16, 16)
    back, _ = map_to_scan(x[0], path, params)
    assert back.shape == data.shape
    np.testing.assert_allclose(back[:, 0], (data[:, 0] - data.min()) / np.ptp(data), atol=1e-6)  # the padding cropped off


def test_a_map_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    params = CONFIGS[0].effective(None, 3)
    with pytest.raises(ValueError, match="model-input space"):
        map_to_scan(np.zeros((20, 16)), _scan(tmp_path), params)
