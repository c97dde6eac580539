"""Random augmentation, applied after the cache and only while training.

Randomness is re-seeded at every epoch (and per data-loader worker) from (seed, epoch, worker), so an
interrupted run resumes exactly at an epoch boundary. Seeding once per epoch, not per image, matters:
re-seeding MONAI's transforms costs more than applying them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, RandAffine, RandFlip, RandScaleIntensity, RandShiftIntensity

from pipeline.settings.augment import AugmentConfig


def build_augmentation(config: AugmentConfig, dims: int) -> Compose | None:
    """A MONAI Compose of array transforms for ``(C, *spatial)`` arrays, or None when disabled."""
    if not config.enabled:
        return None
    angle = math.radians(config.rotate_degrees)
    rotate = angle if dims == 2 else (angle, angle, angle)
    return Compose(
        [
            *[RandFlip(prob=config.flip_prob, spatial_axis=axis) for axis in range(dims)],
            RandAffine(prob=config.affine_prob, rotate_range=rotate, scale_range=config.scale, padding_mode="zeros"),
            RandScaleIntensity(factors=config.intensity_scale, prob=config.intensity_prob),
            RandShiftIntensity(offsets=config.intensity_shift, prob=config.intensity_prob),
        ]
    )


def stream_seed(seed: int, epoch: int, worker: int = 0) -> int:
    """The seed of one epoch's augmentation stream in one worker (0 = the main process)."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + worker) % (2**32)


def augment(transform: Compose | None, image: np.ndarray) -> np.ndarray:
    """Apply ``transform`` (drawing from its current random stream), or return ``image`` unchanged.

    MONAI's metadata tracking is switched off meanwhile: cached inputs carry no metadata, and tracking
    it costs two thirds of the augmentation time.
    """
    if transform is None:
        return image
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        return np.asarray(transform(torch.from_numpy(image)), dtype=np.float32)
    finally:
        set_track_meta(tracking)
