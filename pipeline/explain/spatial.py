"""Mapping a map from model-input space back onto the ingested scan's voxel grid.

The preprocessing chain (:mod:`pipeline.preprocess.transforms`) is: load, orientation RAS,
optional resampling, intensity, 2D view or (S, A, R) transpose, resize, pad/crop. The geometric
steps are undone here with MONAI's own inverses (``Resized``, ``ResizeWithPadOrCropd``,
``Orientationd``, ``Spacingd``, replayed on the recorded operations); the 2D view is undone by
hand: a squeezed 2D scan gets its singleton axis back, a ``centre``/``2.5d`` slice is placed in the
middle axial slice (other slices zero), a ``mip`` map is repeated along S. The result lies on the
ingested NIfTI's grid, so it shares that file's affine (RAS+, mm) and overlays line up.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ResizeWithPadOrCropd, Resized, Spacingd,
)

from pipeline.preprocess.transforms import KEY
from pipeline.storage import atomic_write

log = logging.getLogger(__name__)


def _head(params: dict[str, Any]) -> list[Any]:
    steps: list[Any] = [Orientationd(KEY, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if params["spacing"]:
        steps.append(Spacingd(KEY, pixdim=params["spacing"], mode="bilinear"))
    return steps


def _tail(params: dict[str, Any]) -> Compose:
    size = tuple(params["input_size"])
    return Compose([Resized(KEY, spatial_size=max(size), size_mode="longest", mode="area"),
                    ResizeWithPadOrCropd(KEY, spatial_size=size)])


def map_to_scan(map_: np.ndarray, volume_path: Path, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``map_`` (model-input spatial shape) on the ingested volume's grid, and that volume's affine.

    ``params`` are the scan's :meth:`PreprocessConfig.effective` parameters (as in the cache key).
    """
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        loaded = Compose([LoadImaged(KEY, reader="NibabelReader", image_only=True),
                          EnsureChannelFirstd(KEY, channel_dim="no_channel")])({KEY: str(volume_path)})
    head = Compose(_head(params))
    oriented = head(loaded)[KEY]  # (1, R, A, S) with the recorded orientation/spacing operations
    spatial = tuple(oriented.shape[1:])
    if params["dims"] == 3:
        view_shape = (spatial[2], spatial[1], spatial[0])  # (S, A, R)
    elif 1 in spatial:
        view_shape = tuple(s for i, s in enumerate(spatial) if i != spatial.index(1))
    else:
        view_shape = spatial[:2]
    tail = _tail(params)
    traced = tail({KEY: MetaTensor(torch.zeros((1, *view_shape)))})[KEY]
    mapped = MetaTensor(torch.as_tensor(np.asarray(map_, dtype=np.float32))[None], applied_operations=traced.applied_operations)
    view = np.asarray(tail.inverse({KEY: mapped})[KEY])[0]
    if params["dims"] == 3:
        volume = view.transpose(2, 1, 0)
    elif 1 in spatial:
        volume = np.expand_dims(view, spatial.index(1))
    elif params.get("slice_strategy") == "mip":
        volume = np.repeat(view[..., None], spatial[2], axis=2)
    else:
        volume = np.zeros(spatial, dtype=np.float32)
        volume[..., spatial[2] // 2] = view
    restored = MetaTensor(torch.as_tensor(np.ascontiguousarray(volume))[None], meta=oriented.meta,
                          applied_operations=oriented.applied_operations)
    original = np.asarray(head.inverse({KEY: restored})[KEY])[0]
    return original.astype(np.float32), nib.load(str(volume_path)).affine


def write_map_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """An attribution map as NIfTI-1 with the scan's affine and an empty description (no metadata)."""
    image = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    image.header["descrip"] = b"scanlens attribution"
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)), durable=False)
