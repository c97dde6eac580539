"""DICOM series assembly: grouping, slice ordering, geometry checks and the affine.

Conventions:

* DICOM positions/orientations are LPS (mm). The returned affine is RAS (mm), obtained as
  ``diag(-1, -1, 1, 1) @ affine_lps``; volumes are then reoriented to the closest canonical
  RAS+ axis order (``nibabel.as_closest_canonical``).
* Voxel ``[i, j, k]`` before reorientation is column ``i``, row ``j`` of the ``k``-th slice,
  slices ordered by their position along the slice normal ``n = row_cosines x col_cosines``
  (never by InstanceNumber or file name).
* A group with a single frame is a 2D scan, stored as a volume of depth 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import PROJECTION_MODALITIES, DicomInstance

DEFAULT_ORIENTATION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DUPLICATE_TOLERANCE_MM = 0.01
EXACT_SPACING_TOLERANCE = 1e-3  # relative deviation treated as rounding noise


@dataclass(frozen=True)
class SliceRef:
    """One frame of one file, placed at ``distance`` mm along the slice normal."""

    relpath: str
    frame: int
    distance: float


@dataclass
class SeriesPlan:
    """The geometry of a scan, decided before any pixel is decoded."""

    slices: list[SliceRef]
    affine_ras: np.ndarray
    dims: int
    rows: int
    cols: int
    slice_thickness_mm: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def relpaths(self) -> list[str]:
        return sorted({ref.relpath for ref in self.slices})


def group_key(instance: DicomInstance) -> str:
    """The identity of the scan an instance belongs to, within its (pseudonymous) series.

    A series mixing orientations, matrix sizes or pixel spacings splits into one scan per geometry.
    Position-less single images of projection modalities (CR, DX, US, SC, ...) are scans of their own.
    """
    first = instance.frames[0]
    orientation = first.orientation or DEFAULT_ORIENTATION
    spacing = first.pixel_spacing or (0.0, 0.0)
    key = (
        f"{instance.series_id}|iop={','.join(f'{v:.4f}' for v in orientation)}"
        f"|size={instance.rows}x{instance.cols}x{instance.samples_per_pixel}"
        f"|px={spacing[0]:.4f},{spacing[1]:.4f}"
    )
    if instance.n_frames == 1 and first.position is None and instance.modality in PROJECTION_MODALITIES:
        key += f"|file={instance.relpath}"
    return key


def _normal(orientation: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    return row, col, np.cross(row, col)


def plan_series(instances: list[DicomInstance], spacing_tolerance: float = 0.05) -> SeriesPlan:
    """Order the frames of one group and build its affine, or raise :class:`QuarantineError`."""
    first = instances[0]
    frames = [(inst, index, geo) for inst in sorted(instances, key=lambda i: i.relpath) for index, geo in enumerate(inst.frames)]
    warnings: list[str] = []
    multi = [inst for inst in instances if inst.n_frames > 1]
    if multi and len(instances) > 1:
        raise QuarantineError(
            QuarantineReason.MIXED_DIMENSIONS,
            f"series mixes {len(multi)} multi-frame object(s) with other instances of the same geometry",
        )
    orientations = {geo.orientation for _, _, geo in frames}
    if len(orientations) > 1:
        raise QuarantineError(QuarantineReason.INCONSISTENT_GEOMETRY, "frames of one object have different orientations")
    orientation = next(iter(orientations))
    if orientation is None:
        orientation = DEFAULT_ORIENTATION
        warnings.append("no ImageOrientationPatient: axial orientation assumed")
    row_cos, col_cos, normal = _normal(orientation)
    if abs(float(np.dot(row_cos, col_cos))) > 1e-3 or abs(np.linalg.norm(normal) - 1.0) > 1e-3:
        raise QuarantineError(QuarantineReason.INCONSISTENT_GEOMETRY, "ImageOrientationPatient is not two orthonormal vectors")
    spacing = first.frames[0].pixel_spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        warnings.append("no pixel spacing: 1.0 mm assumed")
    thickness = first.slice_thickness

    positions = [geo.position for _, _, geo in frames]
    if len(frames) == 1:
        origin = np.asarray(positions[0] if positions[0] is not None else (0.0, 0.0, 0.0))
        if positions[0] is None:
            warnings.append("no ImagePositionPatient: origin at 0 mm")
        step = normal * (thickness or first.spacing_between_slices or 1.0)
        refs = [SliceRef(frames[0][0].relpath, 0, 0.0)]
        return _plan(refs, origin, row_cos, col_cos, step, spacing, 2, first, thickness, warnings)

    if all(p is None for p in positions):
        along = first.spacing_between_slices or first.slice_thickness
        if len(instances) == 1 and along is not None and first.modality not in PROJECTION_MODALITIES:
            warnings.append("multi-frame object without frame positions: frames stacked along the normal from 0 mm")
            positions = [tuple(normal * along * k) for k in range(len(frames))]
        elif len(instances) == 1:
            raise QuarantineError(
                QuarantineReason.UNSUPPORTED_DIMENSIONS,
                f"multi-frame object ({len(frames)} frames) without spatial frame positions, e.g. a cine loop; not a volume",
            )
        else:
            raise QuarantineError(
                QuarantineReason.INCONSISTENT_GEOMETRY, "slices have no ImagePositionPatient, so their order is unknown"
            )
    elif any(p is None for p in positions):
        raise QuarantineError(QuarantineReason.INCONSISTENT_GEOMETRY, "some slices lack ImagePositionPatient")

    points = np.asarray(positions, dtype=float)
    distances = points @ normal
    order = np.argsort(distances, kind="stable")
    points, distances = points[order], distances[order]
    refs = [SliceRef(frames[i][0].relpath, frames[i][1], float(distances[n])) for n, i in enumerate(order)]
    _check_spacing(distances, spacing_tolerance, warnings)
    step = (points[-1] - points[0]) / (len(points) - 1)
    expected = points[0] + np.outer(np.arange(len(points)), step)
    residual = float(np.abs(points - expected).max())
    if residual > max(0.1, 0.05 * float(np.linalg.norm(step))):
        raise QuarantineError(
            QuarantineReason.INCONSISTENT_GEOMETRY,
            f"slice positions are not on a line (largest deviation {residual:.2f} mm)",
        )
    tilt = float(np.degrees(np.arccos(np.clip(abs(np.dot(step, normal)) / np.linalg.norm(step), -1, 1))))
    if tilt > 0.1:
        warnings.append(f"slices are sheared by {tilt:.1f} degrees (gantry tilt); the affine keeps the shear")
    return _plan(refs, points[0], row_cos, col_cos, step, spacing, 3, first, thickness, warnings)


def _check_spacing(distances: np.ndarray, tolerance: float, warnings: list[str]) -> None:
    gaps = np.diff(distances)
    if np.any(gaps < DUPLICATE_TOLERANCE_MM):
        count = int(np.sum(gaps < DUPLICATE_TOLERANCE_MM))
        raise QuarantineError(QuarantineReason.DUPLICATE_POSITION, f"{count} slice(s) share a position with another slice")
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median) / median
    if float(deviation.max()) <= EXACT_SPACING_TOLERANCE:
        return
    ratios = gaps / median
    if np.any(ratios >= 1.5):
        missing = int(np.sum(np.round(ratios[ratios >= 1.5]) - 1))
        raise QuarantineError(
            QuarantineReason.MISSING_SLICES,
            f"about {missing} slice(s) missing: spacing jumps from {median:.3g} mm to {float(gaps.max()):.3g} mm",
        )
    if float(deviation.max()) <= tolerance:
        warnings.append(f"slice spacing varies by up to {100 * float(deviation.max()):.1f}% around {median:.3g} mm")
        return
    raise QuarantineError(
        QuarantineReason.INCONSISTENT_GEOMETRY,
        f"non-uniform slice spacing: {float(gaps.min()):.3g} to {float(gaps.max()):.3g} mm "
        f"(tolerance {100 * tolerance:.0f}%)",
    )


def _plan(
    refs: list[SliceRef],
    origin: np.ndarray,
    row_cos: np.ndarray,
    col_cos: np.ndarray,
    step: np.ndarray,
    spacing: tuple[float, float],
    dims: int,
    first: DicomInstance,
    thickness: float | None,
    warnings: list[str],
) -> SeriesPlan:
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * spacing[1]  # i runs along a row: column spacing
    affine_lps[:3, 1] = col_cos * spacing[0]  # j runs down a column: row spacing
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = origin
    return SeriesPlan(
        slices=refs,
        affine_ras=LPS_TO_RAS @ affine_lps,
        dims=dims,
        rows=first.rows,
        cols=first.cols,
        slice_thickness_mm=thickness if thickness is not None else (float(np.linalg.norm(step)) if dims == 3 else None),
        warnings=warnings + [w for w in first.warnings if w not in warnings],
    )


def stack_slices(plan: SeriesPlan, frames: dict[str, np.ndarray]) -> np.ndarray:
    """Stack decoded frames (``relpath -> (frames, rows, cols)``) into a ``(cols, rows, slices)`` array."""
    volume = np.empty((plan.cols, plan.rows, len(plan.slices)), dtype=np.float32)
    for k, ref in enumerate(plan.slices):
        volume[:, :, k] = frames[ref.relpath][ref.frame].T
    return volume
