"""What the out-of-distribution fingerprint measures on one scan: raw intensity percentiles, the model
input's coarse intensity pattern, and each model's penultimate-layer features.

Used both when a fingerprint is built (:mod:`pipeline.evaluate.fingerprint`, on the training scans)
and at scoring (:mod:`pipeline.scoring.ood`, on each scored scan), so both sides measure alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch.nn import functional

from pipeline.inference import LoadedModel, predict_members
from pipeline.parallel import parallel_map

#: Per-scan raw intensity percentiles (in %).
PERCENTILES = (1.0, 10.0, 50.0, 90.0, 99.0)
#: Voxels read per scan for its percentiles: larger volumes are subsampled on a regular grid.
MAX_VOXELS = 1 << 21
#: Edge of the intensity pattern: the model input area-downsampled to this many pixels per spatial axis.
PATTERN_EDGE = 8


def raw_percentiles(path: Path) -> np.ndarray:
    """:data:`PERCENTILES` of one ingested volume's stored values (scaled as its NIfTI header says:
    HU for CT; non-finite values ignored), over a regular subsample of at most about :data:`MAX_VOXELS`
    voxels. These are the intensities before the preprocessing normalises them."""
    image = cast("nib.Nifti1Image", nib.load(str(path)))  # ingested volumes are NIfTI-1
    shape = tuple(int(s) for s in image.shape)
    step = max(1, math.ceil((math.prod(shape) / MAX_VOXELS) ** (1 / max(1, len(shape)))))
    data = np.asarray(image.dataobj[tuple(slice(None, None, step) for _ in shape)], dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.full(len(PERCENTILES), np.nan)
    return np.percentile(finite, PERCENTILES)


def scan_percentiles(paths: Sequence[Path], workers: int | None = None) -> np.ndarray:
    """:func:`raw_percentiles` of each path, ``(n, len(PERCENTILES))``."""
    if not paths:
        return np.zeros((0, len(PERCENTILES)))
    rows = parallel_map(raw_percentiles, list(paths), workers or os.cpu_count() or 1, "intensity", chunksize=16)
    return np.vstack(rows)


def input_patterns(root: Path, index: pd.DataFrame) -> np.ndarray:
    """Each cached model input (``cache_path`` relative to ``root``; ``(C, *spatial)``, intensities
    already normalised by the preprocessing) area-downsampled to :data:`PATTERN_EDGE` per spatial
    axis and flattened: ``(n, C x PATTERN_EDGE^dims)``. Where the intensities sit in the image, at
    the model's own normalisation (an inverted image differs here, not in its histogram)."""
    rows = []
    for relative in index["cache_path"]:
        x = torch.from_numpy(np.load(root / relative)).float()[None]
        pool = functional.adaptive_avg_pool3d if x.dim() == 5 else functional.adaptive_avg_pool2d
        pooled = pool(x, PATTERN_EDGE)
        rows.append(pooled.flatten().numpy().astype(np.float64))
    return np.vstack(rows) if rows else np.zeros((0, PATTERN_EDGE**2))


def penultimate_features(
    models: Sequence[LoadedModel], root: Path, index: pd.DataFrame, batch_size: int = 64
) -> list[np.ndarray]:
    """Each model's global-pooled penultimate features ``(n, F)`` (the input of its ``fc`` layer, caught
    by a forward pre-hook; :func:`pipeline.inference.predict_members`) for the rows of a preprocessed
    index (``cache_path`` relative to ``root``)."""
    caught = predict_members(list(models), root, index, batch_size, features=True, flips=False).features
    assert caught is not None
    return caught
