"""The ``preprocess`` settings group: how scans become model inputs, as a user states it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting

if TYPE_CHECKING:
    from pipeline.preprocess.config import PreprocessConfig

#: Model input edge when none is given: 64 px for a 2D model, 32 voxels for a 3D one.
DEFAULT_EDGE = {2: 64, 3: 32}


@dataclass(frozen=True, config=SETTINGS)
class PreprocessSettings:
    """How scans become model inputs, as a user states it (the ``preprocess`` settings group).

    The model's dims come from the model kind (``--dims``, or the ``2d``/``3d`` partition);
    :meth:`for_dims` resolves the rest into the :class:`PreprocessConfig` that the cache keys hash.
    """

    input_size: int | None = setting(
        None, "model input edge in voxels, H=W or D=H=W (none: 64 for 2D, 32 for 3D)", metavar="N"
    )
    target_spacing_mm: float | None = setting(
        None, "isotropic resampling in mm before resizing (none: keep the scan's grid)", metavar="MM"
    )
    intensity: Literal["auto", "ct_window", "percentile", "minmax"] = setting(
        "auto", "intensity normalisation: auto picks ct_window for CT, percentile for MR/PT, minmax otherwise"
    )
    ct_window: str = setting(
        "soft_tissue", "CT window: soft_tissue, lung, bone or 'centre,width' in HU", metavar="WINDOW"
    )
    slice_strategy: Literal["centre", "mip", "2.5d"] = setting(
        "centre", "how a 2D model reads 3D scans: centre slice, MIP along S, or 2.5d (3 slices as channels)"
    )

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_size < 1:
            raise UserInputError("input size must be at least 1")
        if self.target_spacing_mm is not None and self.target_spacing_mm <= 0:
            raise UserInputError("target spacing must be positive")

    def for_dims(self, dims: int) -> PreprocessConfig:
        """The resolved config of a ``dims``-D model (2 or 3)."""
        from pipeline.preprocess.config import PreprocessConfig

        if dims not in DEFAULT_EDGE:
            raise UserInputError(f"a model has 2 or 3 spatial dims, not {dims}")
        edge = self.input_size or DEFAULT_EDGE[dims]
        spacing = (self.target_spacing_mm,) * 3 if self.target_spacing_mm else None
        return PreprocessConfig(
            dims=dims,
            input_size=(edge,) * dims,
            target_spacing_mm=spacing,
            intensity=self.intensity,
            ct_window=self.ct_window,
            slice_strategy=self.slice_strategy,
        )
