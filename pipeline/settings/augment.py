"""The ``augment`` settings group: random augmentation while training (:class:`AugmentConfig`)."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class AugmentConfig:
    """Random augmentation while training (the ``augment`` settings group): flips on every spatial
    axis, a small affine (degrees, relative scale), and intensity jitter (relative scale, absolute
    shift on [0, 1] images). Probabilities are per image."""

    enabled: bool = setting(True, "random augmentation while training", flag="--augment")
    flip_prob: float = setting(0.5, "probability of a flip, per spatial axis")
    affine_prob: float = setting(0.5, "probability of the random affine")
    rotate_degrees: float = setting(10.0, "largest rotation of the affine in degrees (each axis in 3D)")
    scale: float = setting(0.1, "largest relative zoom of the affine", flag="--affine-scale")
    intensity_prob: float = setting(0.5, "probability of each intensity jitter (scale, shift)")
    intensity_scale: float = setting(0.1, "largest relative intensity scaling")
    intensity_shift: float = setting(0.05, "largest absolute intensity shift on [0, 1] images")

    def __post_init__(self) -> None:
        probabilities = (self.flip_prob, self.affine_prob, self.intensity_prob)
        if not all(0 <= p <= 1 for p in probabilities):
            raise UserInputError("augmentation probabilities must be between 0 and 1")
        if min(self.rotate_degrees, self.scale, self.intensity_scale, self.intensity_shift) < 0:
            raise UserInputError("augmentation ranges must not be negative")
