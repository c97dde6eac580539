"""The ScanLens exception hierarchy and the quarantine reason codes.

``UserInputError`` is what the CLI turns into exit code 2 with one line on stderr;
``QuarantineError`` never escapes ingest: it becomes a row in ``quarantine.parquet``.
"""

from __future__ import annotations

from enum import Enum


class ScanLensError(Exception):
    """Base class of every error ScanLens raises on purpose."""


class UserInputError(ScanLensError):
    """Bad input from the user: a missing folder, a malformed labels file, a bad option."""


class QuarantineReason(str, Enum):
    """Why a source file did not become (part of) a catalogued scan. Values are snake_case codes."""

    NOT_DICOM = "not_dicom"
    NO_FILE_META = "no_file_meta"
    DICOMDIR_INDEX = "dicomdir_index"
    NON_IMAGE_OBJECT = "non_image_object"
    NO_PIXEL_DATA = "no_pixel_data"
    UNDECODABLE_PIXELS = "undecodable_pixels"
    TRUNCATED = "truncated"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"
    MISSING_SLICES = "missing_slices"
    DUPLICATE_POSITION = "duplicate_position"
    DUPLICATE_INSTANCE = "duplicate_instance"
    MIXED_DIMENSIONS = "mixed_dimensions"
    UNSUPPORTED_DIMENSIONS = "unsupported_dimensions"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    UNREADABLE_NIFTI = "unreadable_nifti"
    UNLABELED = "unlabeled"


class QuarantineError(ScanLensError):
    """A file or a whole scan cannot be ingested; carries a reason code and a human sentence.

    The ``detail`` must not contain PHI (no header values); it may name the problem in
    general terms ("slice spacing jumps from 3.27 mm to 6.54 mm").
    """

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
