"""Overlays and montages in radiological display convention, with orientation letters.

Volumes are on the ingested grid: canonical RAS+ voxel axes (index increases toward the patient's
Right, Anterior, Superior). Displayed planes follow the radiological convention: axial and coronal
with the patient's right on the image's left; axial with anterior at the top; coronal and sagittal
with superior at the top; sagittal with anterior on the left. Each panel carries its letters
(R/L, A/P, S/I) at the edges. Window/level: a CT window in HU for CT, else the scan's 1st-99th
percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

from pipeline.explain.spatial import map_to_scan
from pipeline.figures import plt, png_bytes

#: For each plane: the fixed RAS axis, and the letters at (left, right, top, bottom) of the display.
PLANES = {
    "axial": (2, ("R", "L", "A", "P")),
    "coronal": (1, ("R", "L", "S", "I")),
    "sagittal": (0, ("A", "P", "S", "I")),
}


@dataclass
class Panel:
    name: str
    image: np.ndarray
    overlay: np.ndarray | None
    letters: dict[str, str]  # edge ("left", "right", "top", "bottom") -> letter


def plane_of_2d_scan(shape: tuple[int, ...]) -> str:
    """The plane a 2D scan lies in, from its singleton axis (axial when none is singleton)."""
    singletons = [i for i, s in enumerate(shape) if s == 1]
    return {2: "axial", 1: "coronal", 0: "sagittal"}.get(singletons[0] if singletons else 2, "axial")


def display_plane(volume: np.ndarray, plane: str, index: int) -> tuple[np.ndarray, dict[str, str]]:
    """One slice of a RAS+ volume as a display image (rows top to bottom), and its edge letters.

    >>> v = np.zeros((4, 4, 4)); v[3, 3, 3] = 1  # a voxel far right, anterior, superior
    >>> image, letters = display_plane(v, "axial", 3)
    >>> np.argwhere(image == 1).tolist(), letters["left"], letters["top"]
    ([[0, 0]], 'R', 'A')
    """
    axis, (left, right, top, bottom) = PLANES[plane]
    slab = np.take(volume, index, axis=axis)  # remaining axes keep RAS order
    image = slab[::-1, ::-1].T  # rows: the second axis decreasing; columns: the first axis decreasing
    return image, {"left": left, "right": right, "top": top, "bottom": bottom}


def window(volume: np.ndarray, ct_window: tuple[float, float] | None) -> tuple[float, float]:
    """(low, high) display range: the CT window (centre, width in HU), or the 1st/99th percentiles."""
    if ct_window is not None:
        centre, width = ct_window
        return centre - width / 2, centre + width / 2
    low, high = np.percentile(volume, [1, 99])
    return float(low), float(high if high > low else low + 1)


def peak_index(importance: np.ndarray) -> tuple[int, ...]:
    """Voxel of the highest importance (the montage's crossing point)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(importance)), importance.shape))


def panels_for(volume: np.ndarray, importance: np.ndarray) -> list[Panel]:
    """One panel for a 2D scan; axial, coronal and sagittal through the attribution peak for 3D."""
    if 1 in volume.shape:
        plane = plane_of_2d_scan(volume.shape)
        image, letters = display_plane(volume, plane, 0)
        overlay, _ = display_plane(importance, plane, 0)
        return [Panel(plane, image, overlay, letters)]
    peak = peak_index(importance)
    panels = []
    for plane, (axis, _) in PLANES.items():
        image, letters = display_plane(volume, plane, peak[axis])
        overlay, _ = display_plane(importance, plane, peak[axis])
        panels.append(Panel(plane, image, overlay, letters))
    return panels


def panels_figure(panels: list[Panel], display_range: tuple[float, float], title: str) -> Figure:
    """The panels side by side, grey-scale windowed, importance overlaid (its 99th percentile = full
    colour; below 20% of that transparent), letters at the edges, ``title`` above."""
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=100, squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        axis.imshow(panel.image, cmap="gray", vmin=display_range[0], vmax=display_range[1], interpolation="nearest")
        if panel.overlay is not None:
            scale = float(np.percentile(panel.overlay, 99)) or float(panel.overlay.max()) or 1.0
            shown = np.clip(panel.overlay / scale, 0, 1)
            axis.imshow(
                np.ma.masked_less(shown, 0.2), cmap="inferno", vmin=0, vmax=1, alpha=0.55, interpolation="bilinear"
            )
        for edge, (x, y, ha, va) in {
            "left": (0.02, 0.5, "left", "center"),
            "right": (0.98, 0.5, "right", "center"),
            "top": (0.5, 0.98, "center", "top"),
            "bottom": (0.5, 0.02, "center", "bottom"),
        }.items():
            axis.text(
                x,
                y,
                panel.letters[edge],
                transform=axis.transAxes,
                ha=ha,
                va=va,
                color="yellow",
                fontsize=11,
                fontweight="bold",
            )
        axis.set_title(panel.name, fontsize=9)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    return figure


def render_panels(panels: list[Panel], display_range: tuple[float, float], title: str) -> bytes:
    """PNG bytes of :func:`panels_figure`; titles are wrapped to fit (:func:`pipeline.figures.lay_out`)."""
    return png_bytes(panels_figure(panels, display_range, title))


@dataclass
class ScanOverlay:
    """One ingested scan ready to carry maps: its volume (RAS+ grid), the preprocessing parameters
    that map model-input maps back onto it, and its display window."""

    volume_path: Path
    params: dict[str, Any]
    volume: np.ndarray
    display: tuple[float, float]

    @classmethod
    def load(cls, volume_path: Path, params: dict[str, Any]) -> ScanOverlay:
        volume = np.asarray(cast("nib.Nifti1Image", nib.load(str(volume_path))).dataobj, dtype=np.float32)
        return cls(
            volume_path, params, volume, window(volume, tuple(params["window"]) if params.get("window") else None)
        )

    def render(self, importance: np.ndarray, title: str) -> tuple[bytes, np.ndarray, np.ndarray]:
        """PNG of ``importance`` (model-input space) over the scan, the map on the scan grid, its affine."""
        on_scan, affine = map_to_scan(importance, self.volume_path, self.params)
        return render_panels(panels_for(self.volume, on_scan), self.display, title), on_scan, affine
