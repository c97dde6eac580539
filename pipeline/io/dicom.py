"""Reading one DICOM file: header facts for series assembly, and pixel decoding.

Conventions: positions and orientations are in the DICOM patient coordinate system (LPS, mm).
``PixelSpacing`` is (row spacing, column spacing) in mm, i.e. (distance between rows, distance
between columns). Decoded frames are ``(rows, cols)`` arrays of modality values (rescale applied,
MONOCHROME1 inverted, colour converted to luminance).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from pipeline.deid import Pseudonymizer, allowed_metadata
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.header import (
    header_float,
    header_floats,
    optional_float,
    raw_value,
)
from pipeline.io.limits import ReadLimits, check_finite
from pipeline.io.pixel_checks import check_deflated, check_pixel_bytes, pixel_layout

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Modalities whose single images without ImagePositionPatient are planar (each file is its own 2D scan).
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "US", "XA", "RF", "IO", "PX", "OT", "SC", "ES", "XC", "NM", "OP"})
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "KO", "PR", "REG", "FID", "DOC"})
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DEFLATED = "1.2.840.10008.1.2.1.99"
LOSSLESS_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201",
})


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

    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rescale: tuple[float, float]  # (slope, intercept)


@dataclass
class DicomInstance:
    """What series assembly needs from one DICOM file. Identifiers are pseudonyms: no PHI in here."""

    relpath: str
    instance_key: str  # keyed hash of SOPInstanceUID: copies of one instance share it
    lossy: bool
    patient_id: str | None
    study_id: str
    series_id: str
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
    metadata: dict[str, str | float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    transfer_syntax: str = ""
    bits_allocated: int = 16
    planar_configuration: int = 0
    pixel_span: tuple[int, int] | None = None  # (offset, length) of the Pixel Data value in the file bytes

    @property
    def modality(self) -> str:
        return str(self.metadata.get("Modality") or "OT")


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
            raise QuarantineError(QuarantineReason.TRUNCATED, f"file ends inside the DICOM data set ({type(exc).__name__})")
        except MemoryError:
            raise QuarantineError(QuarantineReason.IMPLAUSIBLE_HEADER, "an element declares a length the file cannot hold")
        except RecursionError:
            raise QuarantineError(QuarantineReason.IMPLAUSIBLE_HEADER, "sequences nested too deep to parse")
        except Exception as exc:  # noqa: BLE001 (pydicom raises many types on malformed input)
            raise QuarantineError(QuarantineReason.NOT_DICOM, f"cannot be parsed as DICOM ({type(exc).__name__})")
    raise AssertionError("unreachable")


def _check_image_object(ds: Dataset, meta: Dataset | None, allow_burned_in: bool) -> tuple[str, UID]:
    """Quarantine what is not an image this reader can lay out; return (SOP class, transfer syntax)."""
    sop_class = str(_attr(ds, "SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise QuarantineError(
            QuarantineReason.DICOMDIR_INDEX,
            "DICOMDIR media index, not an image; the files it references are ingested on their own",
        )
    if meta is None or "TransferSyntaxUID" not in meta:
        raise QuarantineError(QuarantineReason.NO_FILE_META, "no file meta information, so the transfer syntax is unknown")
    syntax = UID(str(_attr(meta, "TransferSyntaxUID", "") or "").strip())
    if not syntax.is_valid or not syntax.is_transfer_syntax:
        raise QuarantineError(QuarantineReason.UNKNOWN_TRANSFER_SYNTAX, "TransferSyntaxUID is not a known transfer syntax")
    if not any(tag in ds for tag in PIXEL_TAGS):
        modality = str(_attr(ds, "Modality", "") or "")
        if modality in NON_IMAGE_MODALITIES or (sop_class and "Image" not in UID(sop_class).name):
            raise QuarantineError(
                QuarantineReason.NON_IMAGE_OBJECT, f"{modality or 'non-image'} object without pixel data; not a scan"
            )
        raise QuarantineError(QuarantineReason.NO_PIXEL_DATA, "image object without Pixel Data")
    if str(_attr(ds, "BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
        raise QuarantineError(
            QuarantineReason.BURNED_IN_ANNOTATION,
            "BurnedInAnnotation is YES: pixels may show identifying text (allow with allow_burned_in)",
        )
    return sop_class, syntax


def parse_dicom(
    data: bytes, relpath: str, pseudonymizer: Pseudonymizer, keep_demographics: bool, allow_burned_in: bool,
    limits: ReadLimits | None = None,
) -> DicomInstance:
    """Parse a file's bytes into a :class:`DicomInstance`, or raise :class:`QuarantineError`.

    Every number of the pixel module is range-checked and the bytes the pixels would need are checked
    against the file and against ``limits`` before any per-frame structure is built.
    """
    limits = limits or ReadLimits()
    ds = _read_dataset(data, limits)
    meta = getattr(ds, "file_meta", None)
    _, syntax = _check_image_object(ds, meta, allow_burned_in)
    layout = pixel_layout(ds, limits)
    notes: list[str] = []
    pixel_span = None
    if "PixelData" in ds:
        raw = ds.get_item("PixelData")
        value = raw.value if isinstance(raw.value, bytes) else b""
        if syntax != DEFLATED and getattr(raw, "value_tell", None) is not None:
            pixel_span = (int(raw.value_tell), len(value))
        if syntax != DEFLATED:
            check_pixel_bytes(layout, syntax, value, limits, notes)
    limits.check_decoded(layout.n_values, max(layout.bits_allocated, 8) / 8, "the pixel data")
    patient = str(_attr(ds, "PatientID", "") or "").strip()
    study_uid = str(_attr(ds, "StudyInstanceUID", "") or "")
    series_uid = str(_attr(ds, "SeriesInstanceUID", "") or "")
    sop_instance = str(_attr(ds, "SOPInstanceUID", "") or "")
    instance = DicomInstance(
        relpath=relpath,
        instance_key=pseudonymizer.scan(f"instance|{sop_instance or relpath}"),
        lossy=str(_attr(ds, "LossyImageCompression", "00")) == "01" or syntax not in LOSSLESS_SYNTAXES,
        patient_id=pseudonymizer.patient(patient) if patient else None,
        study_id=pseudonymizer.study(study_uid or f"no-study:{relpath}"),
        series_id=pseudonymizer.series(series_uid or f"no-series:{relpath}"),
        rows=layout.rows,
        cols=layout.cols,
        samples_per_pixel=layout.samples,
        photometric=str(_attr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        bits_stored=layout.bits_stored,
        signed=layout.signed,
        n_frames=layout.n_frames,
        frames=_frame_geometries(ds, layout.n_frames),
        slice_thickness=optional_float(ds, "SliceThickness", positive=True),
        spacing_between_slices=_positive(ds, "SpacingBetweenSlices"),
        metadata=allowed_metadata(ds, keep_demographics),
        warnings=notes,
        transfer_syntax=str(syntax),
        bits_allocated=layout.bits_allocated,
        planar_configuration=layout.planar,
        pixel_span=pixel_span,
    )
    if not series_uid:
        instance.warnings.append("no SeriesInstanceUID: the file is its own series")
    return instance


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
            except Exception:
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


def decode_frames(data: bytes, instance: DicomInstance | None = None) -> np.ndarray:
    """Decode all frames of a DICOM file to modality values, shape ``(frames, rows, cols)``, float64.

    Applies, in order: palette/YBR to RGB, RGB to luminance (ITU-R BT.601 weights), MONOCHROME1
    inversion over the stored bit range, then RescaleSlope/Intercept (per frame for enhanced objects).
    ``instance`` is the file's parsed header (parsed here when not given). Raises
    :class:`QuarantineError` (``undecodable_pixels`` or ``truncated``) when decoding fails.
    """
    if instance is None:
        instance = parse_dicom(data, "", Pseudonymizer(b"decode"), keep_demographics=False, allow_burned_in=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if instance.photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                ds = pydicom.dcmread(io.BytesIO(data))
                pixels = apply_color_lut(ds.pixel_array, ds)
            elif instance.transfer_syntax == DEFLATED:  # inflated by pydicom (its size was checked when parsed)
                pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
            elif instance.pixel_span is not None:  # decode the value in place: no second parse of the header
                offset, length = instance.pixel_span
                pixels, _ = get_decoder(UID(instance.transfer_syntax)).as_array(
                    data[offset:offset + length],
                    rows=instance.rows, columns=instance.cols, samples_per_pixel=instance.samples_per_pixel,
                    bits_allocated=instance.bits_allocated, bits_stored=instance.bits_stored,
                    pixel_representation=int(instance.signed), photometric_interpretation=instance.photometric,
                    number_of_frames=instance.n_frames, planar_configuration=instance.planar_configuration,
                    pixel_keyword="PixelData",
                )
            else:
                pixels = pixel_array(io.BytesIO(data))
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            raise QuarantineError(QuarantineReason.TOO_LARGE, "decoding ran out of the worker's memory limit")
        except BaseException as exc:  # noqa: BLE001 (pylibjpeg-rle raises a Rust PanicException, a BaseException)
            if type(exc).__name__ == "PanicException":
                raise QuarantineError(QuarantineReason.DECODER_CRASH, "the decoder panicked (PanicException)")
            message = str(exc).lower()
            if "less than expected" in message or "shorter than" in message or "truncat" in message:
                raise QuarantineError(QuarantineReason.TRUNCATED, "pixel data is shorter than the declared image size")
            raise QuarantineError(
                QuarantineReason.UNDECODABLE_PIXELS, f"no installed decoder could decode the pixel data ({type(exc).__name__})"
            )
    pixels = np.asarray(pixels)
    if instance.n_frames == 1:
        pixels = pixels[np.newaxis]
    if pixels.shape[:3] != (instance.n_frames, instance.rows, instance.cols) or pixels.ndim not in (3, 4):
        raise QuarantineError(QuarantineReason.UNDECODABLE_PIXELS, "decoded pixels do not match the declared image size")
    values = pixels.astype(np.float64)
    if values.ndim == 4:  # colour: (frames, rows, cols, 3)
        values = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    if instance.photometric == "MONOCHROME1":
        values = (-1.0 - values) if instance.signed else ((2**instance.bits_stored - 1) - values)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing rescale is caught just below
        for index, geometry in enumerate(instance.frames):
            slope, intercept = geometry.rescale
            if slope != 1.0 or intercept != 0.0:
                values[index] = values[index] * slope + intercept
    check_finite(values)
    return values

