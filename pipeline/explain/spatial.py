"""Mapping a map from model-input space back onto the ingested scan's voxel grid.

The preprocessing chain (:mod:`pipeline.preprocess.transforms`) is run forward on the scan with
its operations recorded, and its MONAI inverse is applied to the map: pad/crop, resize, the 2D
view (:class:`~pipeline.preprocess.transforms.To2DViewd`) or the (S, A, R) transpose,
resampling and orientation are undone in turn; intensity steps are skipped. The result lies on the
ingested NIfTI's grid, so it shares that file's affine (RAS+, mm) and overlays line up. How a 2D
view of a 3D scan spreads a map over the volume is documented on ``To2DViewd``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from pipeline.preprocess.transforms import KEY, traced_transforms
from pipeline.storage import atomic_write

log = logging.getLogger(__name__)


def map_to_scan(map_: np.ndarray, volume_path: Path, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``map_`` (model-input spatial shape) on the ingested volume's grid, and that volume's affine.

    ``params`` are the scan's :meth:`PreprocessConfig.effective` parameters (as in the cache key).
    """
    chain = traced_transforms(params)
    forward = chain({KEY: str(volume_path)})[KEY]  # the model input, carrying its applied operations
    if tuple(forward.shape[1:]) != tuple(np.shape(map_)):
        raise ValueError(
            f"a map of shape {np.shape(map_)} is not in this scan's model-input space {tuple(forward.shape[1:])}"
        )
    mapped = MetaTensor(
        torch.as_tensor(np.asarray(map_, dtype=np.float32))[None],
        meta=copy.deepcopy(forward.meta),
        applied_operations=copy.deepcopy(forward.applied_operations),
    )
    original = np.asarray(chain.inverse({KEY: mapped})[KEY])[0]
    return original.astype(np.float32), cast("nib.Nifti1Image", nib.load(str(volume_path))).affine


def write_map_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """An attribution map as NIfTI-1 with the scan's affine and an empty description (no metadata)."""
    image = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    image.header["descrip"] = b"scanlens attribution"
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)), durable=False)
