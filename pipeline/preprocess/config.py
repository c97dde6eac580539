"""The typed preprocessing config and the parameters that actually apply to one scan.

Intensity conventions: CT windows are (centre, width) in HU and map [centre - width/2,
centre + width/2] to [0, 1] (clipped); percentile normalisation maps the (lower, upper)
percentiles to [0, 1] (clipped); min-max maps the scan's range to [0, 1].
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserInputError

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
INTENSITY_MODES = ("auto", "ct_window", "percentile", "minmax")
SLICE_STRATEGIES = ("centre", "mip", "2.5d")
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """How a catalogued scan becomes a model input, resolved for one model (built by
    :meth:`PreprocessSettings.for_dims`; its fields are hashed into the preprocessing index's name).

    Attributes:
        dims: 2 for a 2D model (input ``(C, H, W)``), 3 for a 3D model (``(C, D, H, W)``).
        input_size: (H, W) or (D, H, W) in voxels.
        target_spacing_mm: resample to this spacing (RAS axis order) first; None keeps the scan's grid.
        intensity: ``auto`` picks ``ct_window`` for CT, ``percentile`` for MR/PT, ``minmax`` otherwise.
        ct_window: a preset name (soft_tissue, lung, bone) or ``"centre,width"`` in HU.
        percentiles: lower and upper percentile for ``percentile`` mode.
        slice_strategy: how a 2D model reads a 3D scan: the centre axial slice, the maximum-intensity
            projection along S, or ``2.5d`` (three adjacent axial slices as channels).
    """

    dims: int = 2
    input_size: tuple[int, ...] = (64, 64)
    target_spacing_mm: tuple[float, ...] | None = None
    intensity: str = "auto"
    ct_window: str = "soft_tissue"
    percentiles: tuple[float, float] = (0.5, 99.5)
    slice_strategy: str = "centre"

    def __post_init__(self) -> None:
        if self.dims not in (2, 3) or len(self.input_size) != self.dims or min(self.input_size) < 1:
            raise UserInputError(f"input size {self.input_size} does not fit a {self.dims}D model")
        if self.intensity not in INTENSITY_MODES:
            raise UserInputError(f"intensity must be one of {', '.join(INTENSITY_MODES)}")
        if self.slice_strategy not in SLICE_STRATEGIES:
            raise UserInputError(f"slice strategy must be one of {', '.join(SLICE_STRATEGIES)}")
        self.window()  # validates the CT window

    @property
    def in_channels(self) -> int:
        return 3 if self.dims == 2 and self.slice_strategy == "2.5d" else 1

    def window(self) -> tuple[float, float]:
        """The CT window as (centre, width) in HU."""
        if self.ct_window in CT_WINDOWS:
            return CT_WINDOWS[self.ct_window]
        try:
            centre, width = (float(v) for v in self.ct_window.split(","))
        except ValueError:
            raise UserInputError(f"CT window {self.ct_window!r} is neither a preset nor 'centre,width'") from None
        if width <= 0:
            raise UserInputError("CT window width must be positive")
        return centre, width

    def config_hash(self) -> str:
        return _hash(asdict(self))

    def effective(self, modality: object, scan_dims: int) -> dict[str, Any]:
        """The parameters that shape this scan's output: the cache key hashes these and nothing else.

        ``modality`` is the catalogue's value; a missing one (None or NaN) counts as unknown.
        Changing the CT window therefore recomputes CT scans only; a 2D scan ignores the slice strategy.
        """
        modality = modality if isinstance(modality, str) else None
        mode = self.intensity
        if mode == "auto":
            mode = "ct_window" if modality == "CT" else "percentile" if modality in ("MR", "PT") else "minmax"
        params: dict[str, Any] = {
            "version": PREPROCESS_VERSION,
            "dims": self.dims,
            "input_size": list(self.input_size),
            "spacing": list(self.target_spacing_mm) if self.target_spacing_mm else None,
            "intensity": mode,
        }
        if mode == "ct_window":
            params["window"] = list(self.window())
        if mode == "percentile":
            params["percentiles"] = list(self.percentiles)
        if self.dims == 2 and scan_dims == 3:
            params["slice_strategy"] = self.slice_strategy
        if self.dims == 2 and scan_dims == 2 and self.slice_strategy == "2.5d":
            params["channels"] = 3
        return params


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_key(content_hash: str, effective: dict[str, Any]) -> str:
    """Cache key of one preprocessed scan: its content hash x the parameters that apply to it."""
    return _hash({"content": content_hash, "params": effective})[:32]
