"""Random augmentation, applied after the cache and only while training.

Randomness is seeded per (seed, epoch, item) so that an interrupted run resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from monai.transforms import Compose, RandAffine, RandFlip, RandScaleIntensity, RandShiftIntensity


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges: flips on every spatial axis, a small affine (degrees, relative
    scale), and intensity jitter (relative scale, absolute shift on [0, 1] images)."""

    enabled: bool = True
    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0
    scale: float = 0.1
    intensity_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05


def build_augmentation(config: AugmentConfig, dims: int) -> Compose | None:
    """A MONAI Compose of array transforms for ``(C, *spatial)`` arrays, or None when disabled."""
    if not config.enabled:
        return None
    angle = math.radians(config.rotate_degrees)
    rotate = angle if dims == 2 else (angle, angle, angle)
    return Compose([
        *[RandFlip(prob=config.flip_prob, spatial_axis=axis) for axis in range(dims)],
        RandAffine(prob=config.affine_prob, rotate_range=rotate, scale_range=config.scale, padding_mode="zeros"),
        RandScaleIntensity(factors=config.intensity_scale, prob=config.intensity_prob),
        RandShiftIntensity(offsets=config.intensity_shift, prob=config.intensity_prob),
    ])


def augment(transform: Compose | None, image: np.ndarray, seed: int) -> np.ndarray:
    """Apply ``transform`` with its randomness fixed by ``seed``."""
    if transform is None:
        return image
    transform.set_random_state(seed=seed % (2**32))
    return np.asarray(transform(image), dtype=np.float32)
