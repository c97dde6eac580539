"""DICOM series assembly: slice ordering, geometry checks and the affine of one scan.

Conventions:

* DICOM positions/orientations are LPS (mm). The returned affine is RAS (mm), obtained as
  ``diag(-1, -1, 1, 1) @ affine_lps``; volumes are then reoriented to the closest canonical
  RAS+ axis order (``nibabel.as_closest_canonical``).
* Voxel ``[i, j, k]`` before reorientation is column ``i``, row ``j`` of the ``k``-th slice,
  slices ordered by their position along the slice normal ``n = row_cosines x col_cosines``
  (never by InstanceNumber or file name).
* A group with a single frame is a 2D scan, stored as a volume of depth 1 (:func:`_plan_single_frame`);
  more frames are stacked along the normal (:func:`_plan_stack`).

Which files form one group is decided by :func:`pipeline.ingest.identity.scan_identity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.deid import DicomInstance
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import PROJECTION_MODALITIES, FrameGeometry

DEFAULT_ORIENTATION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DUPLICATE_TOLERANCE_MM = 0.01
EXACT_SPACING_TOLERANCE = 1e-3  # relative deviation treated as rounding noise

#: One frame of a group: the instance it belongs to, its index in that file, its geometry.
Frame = tuple[DicomInstance, int, FrameGeometry]


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


@dataclass(frozen=True)
class _Plane:
    """The in-plane axes every frame of a group shares: direction cosines (LPS) and pixel spacing (mm)."""

    row_cos: np.ndarray
    col_cos: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float]  # (row spacing, column spacing)

    def affine_ras(self, step: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """The voxel-to-RAS affine with slice step ``step`` and first voxel at ``origin`` (both LPS, mm)."""
        affine_lps = np.eye(4)
        affine_lps[:3, 0] = self.row_cos * self.spacing[1]  # i runs along a row: column spacing
        affine_lps[:3, 1] = self.col_cos * self.spacing[0]  # j runs down a column: row spacing
        affine_lps[:3, 2] = step
        affine_lps[:3, 3] = origin
        return LPS_TO_RAS @ affine_lps


def plan_series(instances: list[DicomInstance], spacing_tolerance: float = 0.05) -> SeriesPlan:
    """Order the frames of one group and build its affine, or raise :class:`QuarantineError`."""
    _check_not_mixed(instances)
    frames = [
        (inst, index, geo)
        for inst in sorted(instances, key=lambda i: i.relpath)
        for index, geo in enumerate(inst.image.frames)
    ]
    warnings: list[str] = []
    plane = _plane(frames, instances[0], warnings)
    if len(frames) == 1:
        return _plan_single_frame(frames[0], plane, instances[0], warnings)
    return _plan_stack(instances, frames, plane, spacing_tolerance, warnings)


def _check_not_mixed(instances: list[DicomInstance]) -> None:
    multi = [inst for inst in instances if inst.image.n_frames > 1]
    if multi and len(instances) > 1:
        raise QuarantineError(
            QuarantineReason.MIXED_DIMENSIONS,
            f"series mixes {len(multi)} multi-frame object(s) with other instances of the same geometry",
        )


def _plane(frames: list[Frame], first: DicomInstance, warnings: list[str]) -> _Plane:
    """The shared orientation (one, orthonormal) and pixel spacing, with defaults noted in ``warnings``."""
    orientations = {geo.orientation for _, _, geo in frames}
    if len(orientations) > 1:
        raise QuarantineError(
            QuarantineReason.INCONSISTENT_GEOMETRY, "frames of one object have different orientations"
        )
    orientation = next(iter(orientations))
    if orientation is None:
        orientation = DEFAULT_ORIENTATION
        warnings.append("no ImageOrientationPatient: axial orientation assumed")
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    if abs(float(np.dot(row, col))) > 1e-3 or abs(np.linalg.norm(normal) - 1.0) > 1e-3:
        raise QuarantineError(
            QuarantineReason.INCONSISTENT_GEOMETRY, "ImageOrientationPatient is not two orthonormal vectors"
        )
    spacing = first.image.frames[0].pixel_spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        warnings.append("no pixel spacing: 1.0 mm assumed")
    return _Plane(row, col, normal, spacing)


def _plan_single_frame(frame: Frame, plane: _Plane, first: DicomInstance, warnings: list[str]) -> SeriesPlan:
    """A 2D scan: one frame at its position (or 0 mm), one slice thick along the normal."""
    position = frame[2].position
    origin = np.asarray(position if position is not None else (0.0, 0.0, 0.0))
    if position is None:
        warnings.append("no ImagePositionPatient: origin at 0 mm")
    thickness = first.image.slice_thickness
    step = plane.normal * (thickness or first.image.spacing_between_slices or 1.0)
    refs = [SliceRef(frame[0].relpath, 0, 0.0)]
    return _series_plan(refs, plane.affine_ras(step, origin), 2, first, thickness, warnings)


def _plan_stack(
    instances: list[DicomInstance], frames: list[Frame], plane: _Plane, spacing_tolerance: float, warnings: list[str]
) -> SeriesPlan:
    """A 3D scan: frames sorted along the normal, evenly spaced on one line (a tilted line keeps its shear)."""
    first = instances[0]
    points = np.asarray(_positions(instances, frames, plane.normal, warnings), dtype=float)
    distances = points @ plane.normal
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
    tilt = float(np.degrees(np.arccos(np.clip(abs(np.dot(step, plane.normal)) / np.linalg.norm(step), -1, 1))))
    if tilt > 0.1:
        warnings.append(f"slices are sheared by {tilt:.1f} degrees (gantry tilt); the affine keeps the shear")
    thickness = first.image.slice_thickness
    thickness = thickness if thickness is not None else float(np.linalg.norm(step))
    return _series_plan(refs, plane.affine_ras(step, points[0]), 3, first, thickness, warnings)


def _positions(
    instances: list[DicomInstance], frames: list[Frame], normal: np.ndarray, warnings: list[str]
) -> list[tuple[float, ...]]:
    """Every frame's ImagePositionPatient (LPS mm); a multi-frame object without any is stacked from 0 mm."""
    positions = [geo.position for _, _, geo in frames]
    if all(p is None for p in positions):
        first = instances[0].image
        along = first.spacing_between_slices or first.slice_thickness
        if len(instances) == 1 and along is not None and instances[0].modality not in PROJECTION_MODALITIES:
            warnings.append("multi-frame object without frame positions: frames stacked along the normal from 0 mm")
            return [tuple(normal * along * k) for k in range(len(frames))]
        if len(instances) == 1:
            raise QuarantineError(
                QuarantineReason.UNSUPPORTED_DIMENSIONS,
                f"multi-frame object ({len(frames)} frames) without spatial frame positions, e.g. a cine loop; not a volume",
            )
        raise QuarantineError(
            QuarantineReason.INCONSISTENT_GEOMETRY, "slices have no ImagePositionPatient, so their order is unknown"
        )
    if any(p is None for p in positions):
        raise QuarantineError(QuarantineReason.INCONSISTENT_GEOMETRY, "some slices lack ImagePositionPatient")
    return [p for p in positions if p is not None]


def _check_spacing(distances: np.ndarray, tolerance: float, warnings: list[str]) -> None:
    gaps = np.diff(distances)
    if np.any(gaps < DUPLICATE_TOLERANCE_MM):
        count = int(np.sum(gaps < DUPLICATE_TOLERANCE_MM))
        raise QuarantineError(
            QuarantineReason.DUPLICATE_POSITION, f"{count} slice(s) share a position with another slice"
        )
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


def _series_plan(
    refs: list[SliceRef],
    affine_ras: np.ndarray,
    dims: int,
    first: DicomInstance,
    thickness: float | None,
    warnings: list[str],
) -> SeriesPlan:
    """The plan, with the first file's own header warnings after the geometry's."""
    return SeriesPlan(
        slices=refs,
        affine_ras=affine_ras,
        dims=dims,
        rows=first.image.rows,
        cols=first.image.cols,
        slice_thickness_mm=thickness,
        warnings=warnings + [w for w in first.image.warnings if w not in warnings],
    )


def stack_slices(plan: SeriesPlan, frames: dict[str, np.ndarray]) -> np.ndarray:
    """Stack decoded frames (``relpath -> (frames, rows, cols)``) into a ``(cols, rows, slices)`` array."""
    volume = np.empty((plan.cols, plan.rows, len(plan.slices)), dtype=np.float32)
    for k, ref in enumerate(plan.slices):
        volume[:, :, k] = frames[ref.relpath][ref.frame].T
    return volume
