"""The invertible 2D view and the traced chain: forward then inverse returns the scan's grid."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.preprocess import PreprocessConfig
from pipeline.preprocess.transforms import KEY, To2DViewd, deterministic_transforms, traced_transforms

STRATEGIES = ("centre", "mip", "2.5d")


def _scan(tmp_path: Path, shape: tuple[int, ...], affine: np.ndarray, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32) * 100
    path = tmp_path / f"scan_{'x'.join(map(str, shape))}.nii"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


LPS = np.array([[-0.8, 0, 0, 12.0], [0, -1.1, 0, -3.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])  # stored L, P, S


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.5)])
def test_2d_model_forward_then_inverse_returns_the_scan_shape_and_affine(tmp_path: Path, strategy: str,
                                                                          spacing: tuple[float, ...] | None) -> None:
    path = _scan(tmp_path, (20, 24, 7), LPS)
    params = PreprocessConfig(dims=2, input_size=(16, 12), slice_strategy=strategy, target_spacing_mm=spacing,
                              intensity="minmax").effective(None, 3)
    chain = traced_transforms(params)
    forward = chain({KEY: str(path)})[KEY]
    assert isinstance(forward, MetaTensor) and forward.applied_operations
    # the traced chain computes exactly what is cached
    np.testing.assert_array_equal(np.asarray(forward), deterministic_transforms(params)({KEY: str(path)})[KEY])
    for channels in {forward.shape[0], 1}:  # the model input itself, and a one-channel map over it
        moving = MetaTensor(forward.as_tensor()[:channels].clone(), meta=copy.deepcopy(forward.meta),
                            applied_operations=copy.deepcopy(forward.applied_operations))  # inverses edit the trace
        back = chain.inverse({KEY: moving})[KEY]
        assert tuple(back.shape[1:]) == (20, 24, 7) and back.applied_operations == []
        np.testing.assert_allclose(back.affine.numpy(), LPS, atol=1e-6)


def test_3d_model_forward_then_inverse_returns_the_scan_shape_and_affine(tmp_path: Path) -> None:
    path = _scan(tmp_path, (20, 24, 7), LPS)
    params = PreprocessConfig(dims=3, input_size=(8, 12, 10), intensity="minmax").effective(None, 3)
    chain = traced_transforms(params)
    forward = chain({KEY: str(path)})[KEY]
    back = chain.inverse({KEY: forward})[KEY]
    assert tuple(back.shape) == (1, 20, 24, 7) and back.applied_operations == []
    np.testing.assert_allclose(back.affine.numpy(), LPS, atol=1e-6)


def _ras_volume(shape: tuple[int, ...] = (4, 5, 6)) -> MetaTensor:
    affine = torch.tensor([[2.0, 0, 0, -5], [0, 1.5, 0, 3], [0, 0, 3.0, 10], [0, 0, 0, 1]], dtype=torch.float64)
    return MetaTensor(torch.arange(float(np.prod(shape))).reshape(1, *shape), affine=affine)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_view_records_the_slice_plane_in_the_affine_and_inverse_undoes_it(strategy: str) -> None:
    volume = _ras_volume()
    view = To2DViewd(KEY, strategy)
    out = view({KEY: volume})[KEY]
    # the view's origin is the middle axial slice (index 3 of 6): 10 mm + 3 x 3 mm
    assert out.affine[2, 3].item() == 19.0 and torch.equal(out.affine[:3, :3], volume.affine[:3, :3])
    back = view.inverse({KEY: out})[KEY]
    assert back.shape == volume.shape and torch.equal(back.affine, volume.affine) and back.applied_operations == []
    if strategy == "centre":
        assert torch.equal(back[..., 3], volume[..., 3]) and not back[..., [0, 1, 2, 4, 5]].any()
    elif strategy == "mip":
        assert all(torch.equal(back[..., k], volume[..., 5]) for k in range(6))  # the maximum (last slice), everywhere
    else:  # three channels back onto their slices
        assert torch.equal(back[..., 2:5], volume[..., 2:5]) and not back[..., [0, 1, 5]].any()


def test_a_one_channel_map_of_a_2_5d_view_lands_on_the_middle_slice() -> None:
    volume = _ras_volume()
    view = To2DViewd(KEY, "2.5d")
    out = view({KEY: volume})[KEY]
    summed = MetaTensor(out.as_tensor().sum(0, keepdim=True)).copy_meta_from(out)
    back = view.inverse({KEY: summed})[KEY]
    assert back.shape == volume.shape and torch.equal(back[0, ..., 3], out.as_tensor().sum(0))
    assert not back[..., [0, 1, 2, 4, 5]].any()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_squeezed_2d_scan_comes_back_exactly(axis: int) -> None:
    shape = [4, 5, 6]
    shape[axis] = 1
    volume = _ras_volume(tuple(shape))
    view = To2DViewd(KEY, "2.5d", channels_for_2d=3)
    out = view({KEY: volume})[KEY]
    assert out.shape[0] == 3 and torch.equal(out[0], out[2])
    kept = [i for i in range(3) if i != axis]
    assert torch.equal(out.affine[:3, :2], volume.affine[:3, kept])  # the view's axes keep their directions
    back = view.inverse({KEY: out})[KEY]
    assert torch.equal(back, volume.as_tensor()) and torch.equal(back.affine, volume.affine)


def test_plain_tensors_carry_the_trace_in_the_dictionary() -> None:
    volume = torch.rand(1, 3, 4, 5)
    view = To2DViewd(KEY, "centre")
    out = view({KEY: volume})
    assert not isinstance(out[KEY], MetaTensor) and len(out[f"{KEY}_transforms"]) == 1
    back = view.inverse(out)
    assert torch.equal(back[KEY][..., 2], volume[..., 2]) and back[f"{KEY}_transforms"] == []


def test_inverse_checks_it_undoes_its_own_step() -> None:
    out = To2DViewd(KEY, "centre")({KEY: _ras_volume()})
    with pytest.raises(RuntimeError):
        To2DViewd(KEY, "centre").inverse(out)  # another instance: not the step that was applied
