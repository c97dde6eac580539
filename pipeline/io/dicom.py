"""Reading one DICOM file's header: the reject checks and the facts series assembly needs.

Conventions: positions and orientations are in the DICOM patient coordinate system (LPS, mm).
``PixelSpacing`` is (row spacing, column spacing) in mm, i.e. (distance between rows, distance
between columns). Pixels are decoded by :mod:`pipeline.io.dicom_pixels`.

This module only reads. What it returns (:class:`DicomHeader`) still holds the data set and the
identifying values as read: :func:`pipeline.deid.deidentify` turns it into the pseudonymous
:class:`~pipeline.deid.DicomInstance` before anything leaves the process that read the file.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.header import (
    header_float,
    header_floats,
    optional_float,
    raw_value,
)
from pipeline.io.limits import ReadLimits
from pipeline.io.pixel_checks import (
    PixelLayout,
    check_deflated,
    check_pixel_bytes,
    pixel_layout,
)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Modalities whose single images without ImagePositionPatient are planar (each file is its own 2D scan).
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "US", "XA", "RF", "IO", "PX", "OT", "SC", "ES", "XC", "NM", "OP"})
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "KO", "PR", "REG", "FID", "DOC"})
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DEFLATED = "1.2.840.10008.1.2.1.99"
LOSSLESS_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.201",
    }
)


def quiet_pydicom() -> None:
    """Stop pydicom from validating values on read and from logging: its messages quote header values (PHI)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logger = logging.getLogger("pydicom")
    logger.handlers.clear()
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


quiet_pydicom()


@dataclass(frozen=True)
class FrameGeometry:
    """Where one frame lies: IPP (LPS mm) of the first transmitted pixel, IOP (row cosines, column cosines)."""

    position: tuple[float, ...] | None  # three values
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rescale: tuple[float, float]  # (slope, intercept)


@dataclass
class DicomImage:
    """The pixel module and geometry of one DICOM file: what decoding and series assembly need. No identifiers."""

    rows: int
    cols: int
    samples_per_pixel: int
    photometric: str
    bits_stored: int
    signed: bool
    n_frames: int
    frames: list[FrameGeometry]
    slice_thickness: float | None
    spacing_between_slices: float | None
    lossy: bool
    warnings: list[str] = field(default_factory=list)
    transfer_syntax: str = ""
    bits_allocated: int = 16
    planar_configuration: int = 0
    pixel_span: tuple[int, int] | None = None  # (offset, length) of the Pixel Data value in the file bytes


@dataclass(frozen=True)
class DicomIdentifiers:
    """The identifying values a scan is grouped by, exactly as read (PHI); empty strings when absent."""

    patient_id: str  # stripped
    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass
class DicomHeader:
    """One parsed DICOM file. ``dataset`` and ``identifiers`` hold PHI: only de-identification reads them."""

    dataset: Dataset = field(repr=False)
    identifiers: DicomIdentifiers = field(repr=False)
    image: DicomImage


def _attr(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)`` for non-numeric, non-sequence attributes (see :func:`raw_value`)."""
    value = raw_value(ds, keyword)
    return default if value is None else value


def _functional(ds: Dataset, frame: int, group: str) -> Dataset | None:
    """Item of functional group ``group`` for ``frame``: per-frame first, then shared (enhanced objects)."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq is not None and len(seq) > index and group in seq[index] and len(seq[index][group].value) > 0:
            return seq[index][group].value[0]
    return None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = header_floats(ds, name, 2, positive=True)
        if spacing is not None:
            return (spacing[0], spacing[1])
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:  # cm
            dx, dy = optional_float(region, "PhysicalDeltaX"), optional_float(region, "PhysicalDeltaY")
            if dx and dy:
                return (abs(dy) * 10.0, abs(dx) * 10.0)
    return None


def _rescale(ds: Dataset) -> tuple[float, float]:
    return (header_float(ds, "RescaleSlope", 1.0) or 1.0, header_float(ds, "RescaleIntercept", 0.0))


def _frame_geometries(ds: Dataset, n_frames: int) -> list[FrameGeometry]:
    """Per-frame geometry; ``n_frames`` must already be checked against the file's size."""
    base_position = header_floats(ds, "ImagePositionPatient", 3)
    base_orientation = header_floats(ds, "ImageOrientationPatient", 6)
    base = FrameGeometry(base_position, base_orientation, _pixel_spacing(ds), _rescale(ds))
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [base] * n_frames
    out = []
    for frame in range(n_frames):
        position, orientation, spacing, rescale = base.position, base.orientation, base.pixel_spacing, base.rescale
        plane = _functional(ds, frame, "PlanePositionSequence")
        if plane is not None:
            position = header_floats(plane, "ImagePositionPatient", 3)
        orient = _functional(ds, frame, "PlaneOrientationSequence")
        if orient is not None:
            orientation = header_floats(orient, "ImageOrientationPatient", 6)
        measures = _functional(ds, frame, "PixelMeasuresSequence")
        if measures is not None and "PixelSpacing" in measures:
            spacing = _pixel_spacing(measures) or spacing
        transform = _functional(ds, frame, "PixelValueTransformationSequence")
        if transform is not None:
            rescale = _rescale(transform)
        out.append(FrameGeometry(position, orientation, spacing, rescale))
    return out


def _read_dataset(data: bytes, limits: ReadLimits) -> Dataset:
    check_deflated(data, limits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            _raise_not_part10(data)
        except (EOFError, OSError) as exc:
            raise QuarantineError(
                QuarantineReason.TRUNCATED, f"file ends inside the DICOM data set ({type(exc).__name__})"
            ) from None
        except MemoryError:
            raise QuarantineError(
                QuarantineReason.IMPLAUSIBLE_HEADER, "an element declares a length the file cannot hold"
            ) from None
        except RecursionError:
            raise QuarantineError(QuarantineReason.IMPLAUSIBLE_HEADER, "sequences nested too deep to parse") from None
        except Exception as exc:  # noqa: BLE001 (pydicom raises many types on malformed input)
            raise QuarantineError(
                QuarantineReason.NOT_DICOM, f"cannot be parsed as DICOM ({type(exc).__name__})"
            ) from None
    raise AssertionError("unreachable")


def read_dicom(data: bytes, limits: ReadLimits | None = None, *, allow_burned_in: bool = False) -> DicomHeader:
    """Parse a file's bytes into a :class:`DicomHeader`, or raise :class:`QuarantineError`.

    The reject checks run first (:func:`_check_image_object`); then every number of the pixel module
    is range-checked and the bytes the pixels would need are checked against the file and against
    ``limits`` before any per-frame structure is built. A BurnedInAnnotation of YES is rejected
    unless ``allow_burned_in``.
    """
    limits = limits or ReadLimits()
    ds = _read_dataset(data, limits)
    syntax = _check_image_object(ds, allow_burned_in)
    layout = pixel_layout(ds, limits)
    notes: list[str] = []
    pixel_span = _check_pixel_data(ds, syntax, layout, limits, notes)
    limits.check_decoded(layout.n_values, max(layout.bits_allocated, 8) / 8, "the pixel data")
    identifiers = _identifiers(ds)
    if not identifiers.series_uid:
        notes.append("no SeriesInstanceUID: the file is its own series")
    return DicomHeader(ds, identifiers, _image(ds, layout, syntax, pixel_span, notes))


def _check_image_object(ds: Dataset, allow_burned_in: bool) -> UID:
    """Quarantine what is not an image this reader can lay out; return the transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    sop_class = str(_attr(ds, "SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    _check_not_dicomdir(ds, sop_class)
    syntax = _check_transfer_syntax(meta)
    _check_has_pixel_data(ds, sop_class)
    _check_burned_in(ds, allow_burned_in)
    return syntax


def _check_not_dicomdir(ds: Dataset, sop_class: str) -> None:
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise QuarantineError(
            QuarantineReason.DICOMDIR_INDEX,
            "DICOMDIR media index, not an image; the files it references are ingested on their own",
        )


def _check_transfer_syntax(meta: Dataset | None) -> UID:
    """The file meta's TransferSyntaxUID, which must be present and a known transfer syntax."""
    if meta is None or "TransferSyntaxUID" not in meta:
        raise QuarantineError(
            QuarantineReason.NO_FILE_META, "no file meta information, so the transfer syntax is unknown"
        )
    syntax = UID(str(_attr(meta, "TransferSyntaxUID", "") or "").strip())
    if not syntax.is_valid or not syntax.is_transfer_syntax:
        raise QuarantineError(
            QuarantineReason.UNKNOWN_TRANSFER_SYNTAX, "TransferSyntaxUID is not a known transfer syntax"
        )
    return syntax


def _check_has_pixel_data(ds: Dataset, sop_class: str) -> None:
    """No pixels: a non-image object (structure set, report, ...) or an image object missing its Pixel Data."""
    if any(tag in ds for tag in PIXEL_TAGS):
        return
    modality = str(_attr(ds, "Modality", "") or "")
    if modality in NON_IMAGE_MODALITIES or (sop_class and "Image" not in UID(sop_class).name):
        raise QuarantineError(
            QuarantineReason.NON_IMAGE_OBJECT, f"{modality or 'non-image'} object without pixel data; not a scan"
        )
    raise QuarantineError(QuarantineReason.NO_PIXEL_DATA, "image object without Pixel Data")


def _check_burned_in(ds: Dataset, allow_burned_in: bool) -> None:
    if str(_attr(ds, "BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
        raise QuarantineError(
            QuarantineReason.BURNED_IN_ANNOTATION,
            "BurnedInAnnotation is YES: pixels may show identifying text (allow with allow_burned_in)",
        )


def _check_pixel_data(
    ds: Dataset, syntax: UID, layout: PixelLayout, limits: ReadLimits, notes: list[str]
) -> tuple[int, int] | None:
    """Check native or encapsulated Pixel Data against the layout; return its (offset, length) in the file.

    A deflated data set is checked when it is inflated, and has no span: its bytes are not the file's.
    """
    if "PixelData" not in ds:
        return None
    raw = ds.get_item("PixelData")
    value = raw.value if isinstance(raw.value, bytes) else b""
    if syntax == DEFLATED:
        return None
    check_pixel_bytes(layout, syntax, value, limits, notes)
    tell = getattr(raw, "value_tell", None)
    if tell is None:
        return None
    return (int(tell), len(value))


def _identifiers(ds: Dataset) -> DicomIdentifiers:
    return DicomIdentifiers(
        patient_id=str(_attr(ds, "PatientID", "") or "").strip(),
        study_uid=str(_attr(ds, "StudyInstanceUID", "") or ""),
        series_uid=str(_attr(ds, "SeriesInstanceUID", "") or ""),
        sop_instance_uid=str(_attr(ds, "SOPInstanceUID", "") or ""),
    )


def _image(
    ds: Dataset, layout: PixelLayout, syntax: UID, pixel_span: tuple[int, int] | None, notes: list[str]
) -> DicomImage:
    """The image facts; header values are read in this order, so the first bad one names the quarantine detail."""
    lossy = str(_attr(ds, "LossyImageCompression", "00")) == "01" or syntax not in LOSSLESS_SYNTAXES
    photometric = str(_attr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()
    frames = _frame_geometries(ds, layout.n_frames)
    slice_thickness = optional_float(ds, "SliceThickness", positive=True)
    spacing_between_slices = _positive(ds, "SpacingBetweenSlices")
    return DicomImage(
        rows=layout.rows,
        cols=layout.cols,
        samples_per_pixel=layout.samples,
        photometric=photometric,
        bits_stored=layout.bits_stored,
        signed=layout.signed,
        n_frames=layout.n_frames,
        frames=frames,
        slice_thickness=slice_thickness,
        spacing_between_slices=spacing_between_slices,
        lossy=lossy,
        warnings=notes,
        transfer_syntax=str(syntax),
        bits_allocated=layout.bits_allocated,
        planar_configuration=layout.planar,
        pixel_span=pixel_span,
    )


def _positive(ds: Dataset, keyword: str) -> float | None:
    """An optional spacing: a negative SpacingBetweenSlices (seen in real files) counts as absent."""
    value = optional_float(ds, keyword)
    return value if value is not None and value > 0 else None


def _looks_like_dataset(data: bytes) -> bool:
    """True if the bytes parse as a bare DICOM data set (any VR/endianness, up to 3 stray leading bytes)."""
    head = data[:65536]

    def stop(tag: Any, vr: Any, length: Any) -> bool:
        return int(tag) > 0x0020FFFF

    for offset in range(4):
        for implicit, little in ((False, True), (True, True), (False, False), (True, False)):
            try:
                ds = read_dataset(io.BytesIO(head[offset:]), implicit, little, stop_when=stop)
            except Exception:  # noqa: BLE001, S112 (any failure means: not in this encoding)
                continue
            if "SOPClassUID" in ds and "Modality" in ds and str(ds.SOPClassUID).startswith("1.2.840.10008."):
                return True
    return False


def _raise_not_part10(data: bytes) -> None:
    """Tell a DICOM data set without a Part 10 header apart from a file that is not DICOM at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        looks_dicom = _looks_like_dataset(data)
    if looks_dicom:
        raise QuarantineError(
            QuarantineReason.NO_FILE_META,
            "DICOM data set without preamble and file meta information; the transfer syntax would be a guess",
        )
    raise QuarantineError(QuarantineReason.NOT_DICOM, "not a DICOM file (no DICM prefix) and not NIfTI")
