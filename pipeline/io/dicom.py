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
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID
from pydicom.values import convert_value

from pipeline.deid import Pseudonymizer, allowed_metadata
from pipeline.errors import QuarantineError, QuarantineReason

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
    """``ds.get(keyword, default)`` for non-sequence attributes, converting the raw element with
    pydicom's own value converter but without building a DataElement (a fifth of the header pass)."""
    element = ds.get_item(keyword)
    if element is None:
        return default
    if isinstance(element, RawDataElement):
        value = convert_value(element.VR or dictionary_VR(element.tag), element, None)
    else:
        value = element.value
    return default if value is None else value


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _functional(ds: Dataset, frame: int, group: str) -> Dataset | None:
    """Item of functional group ``group`` for ``frame``: per-frame first, then shared (enhanced objects)."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq is not None and len(seq) > index and group in seq[index] and len(seq[index][group].value) > 0:
            return seq[index][group].value[0]
    return None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        if name in ds:
            spacing = _floats(ds[name].value, 2)
            if spacing and min(spacing) > 0:
                return (spacing[0], spacing[1])
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:  # cm
            dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
            if dx and dy:
                return (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0)
    return None


def _frame_geometries(ds: Dataset, n_frames: int) -> list[FrameGeometry]:
    base_position = _floats(_attr(ds, "ImagePositionPatient"), 3)
    base_orientation = _floats(_attr(ds, "ImageOrientationPatient"), 6)
    base_spacing = _pixel_spacing(ds)
    base_rescale = (float(_attr(ds, "RescaleSlope", 1) or 1), float(_attr(ds, "RescaleIntercept", 0) or 0))
    base = FrameGeometry(base_position, base_orientation, base_spacing, base_rescale)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [base] * n_frames
    out = []
    for frame in range(n_frames):
        position, orientation, spacing, rescale = base_position, base_orientation, base_spacing, base_rescale
        plane = _functional(ds, frame, "PlanePositionSequence")
        if plane is not None:
            position = _floats(plane.get("ImagePositionPatient"), 3)
        orient = _functional(ds, frame, "PlaneOrientationSequence")
        if orient is not None:
            orientation = _floats(orient.get("ImageOrientationPatient"), 6)
        measures = _functional(ds, frame, "PixelMeasuresSequence")
        if measures is not None and "PixelSpacing" in measures:
            spacing = _pixel_spacing(measures) or spacing
        transform = _functional(ds, frame, "PixelValueTransformationSequence")
        if transform is not None:
            rescale = (float(transform.get("RescaleSlope", 1) or 1), float(transform.get("RescaleIntercept", 0) or 0))
        out.append(FrameGeometry(position, orientation, spacing, rescale))
    return out


def _expected_native_bytes(ds: Dataset, n_frames: int) -> int:
    bits = int(_attr(ds, "BitsAllocated", 8) or 8)
    n_pixels = int(ds.Rows) * int(ds.Columns) * int(_attr(ds, "SamplesPerPixel", 1) or 1) * n_frames
    return (n_pixels * bits + 7) // 8


def parse_dicom(
    data: bytes, relpath: str, pseudonymizer: Pseudonymizer, keep_demographics: bool, allow_burned_in: bool
) -> DicomInstance:
    """Parse a file's bytes into a :class:`DicomInstance`, or raise :class:`QuarantineError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            _raise_not_part10(data)
        except (EOFError, OSError) as exc:
            raise QuarantineError(QuarantineReason.TRUNCATED, f"file ends inside the DICOM data set ({type(exc).__name__})")
        except Exception as exc:  # pydicom raises many types on malformed input
            raise QuarantineError(QuarantineReason.NOT_DICOM, f"cannot be parsed as DICOM ({type(exc).__name__})")
    meta = getattr(ds, "file_meta", None)
    sop_class = str(_attr(ds, "SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise QuarantineError(
            QuarantineReason.DICOMDIR_INDEX,
            "DICOMDIR media index, not an image; the files it references are ingested on their own",
        )
    if meta is None or "TransferSyntaxUID" not in meta:
        raise QuarantineError(QuarantineReason.NO_FILE_META, "no file meta information, so the transfer syntax is unknown")
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
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise QuarantineError(QuarantineReason.NO_PIXEL_DATA, "Rows/Columns missing, so the pixels cannot be laid out")
    n_frames = int(_attr(ds, "NumberOfFrames", 1) or 1)
    syntax = str(meta.TransferSyntaxUID)
    pixel_span = None
    if "PixelData" in ds:
        raw = ds.get_item("PixelData")
        value_length = len(raw.value) if raw.value is not None else 0
        if syntax != DEFLATED and getattr(raw, "value_tell", None) is not None:
            pixel_span = (int(raw.value_tell), value_length)
    if pixel_span is not None and not meta.TransferSyntaxUID.is_compressed:
        expected, actual = _expected_native_bytes(ds, n_frames), pixel_span[1]
        if actual < expected:
            raise QuarantineError(
                QuarantineReason.TRUNCATED, f"pixel data has {actual} bytes, {expected} expected for the declared image size"
            )
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
        rows=rows,
        cols=cols,
        samples_per_pixel=int(_attr(ds, "SamplesPerPixel", 1) or 1),
        photometric=str(_attr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2"),
        bits_stored=int(_attr(ds, "BitsStored", _attr(ds, "BitsAllocated", 16)) or 16),
        signed=int(_attr(ds, "PixelRepresentation", 0) or 0) == 1,
        n_frames=n_frames,
        frames=_frame_geometries(ds, n_frames),
        slice_thickness=_positive(_attr(ds, "SliceThickness")),
        spacing_between_slices=_positive(_attr(ds, "SpacingBetweenSlices")),
        metadata=allowed_metadata(ds, keep_demographics),
        transfer_syntax=syntax,
        bits_allocated=int(_attr(ds, "BitsAllocated", 16) or 16),
        planar_configuration=int(_attr(ds, "PlanarConfiguration", 0) or 0),
        pixel_span=pixel_span,
    )
    if not series_uid:
        instance.warnings.append("no SeriesInstanceUID: the file is its own series")
    return instance


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


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
        except Exception as exc:
            message = str(exc).lower()
            if "less than expected" in message or "shorter than" in message or "truncat" in message:
                raise QuarantineError(QuarantineReason.TRUNCATED, "pixel data is shorter than the declared image size")
            raise QuarantineError(
                QuarantineReason.UNDECODABLE_PIXELS, f"no installed decoder could decode the pixel data ({type(exc).__name__})"
            )
    pixels = np.asarray(pixels)
    if instance.n_frames == 1:
        pixels = pixels[np.newaxis]
    values = pixels.astype(np.float64)
    if values.ndim == 4:  # colour: (frames, rows, cols, 3)
        values = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    if instance.photometric == "MONOCHROME1":
        values = (-1.0 - values) if instance.signed else ((2**instance.bits_stored - 1) - values)
    for index, geometry in enumerate(instance.frames):
        slope, intercept = geometry.rescale
        if slope != 1.0 or intercept != 0.0:
            values[index] = values[index] * slope + intercept
    return values
