"""The ScanLens exception hierarchy and the quarantine reason codes.

``UserInputError`` is what the CLI turns into exit code 2 with one line on stderr;
``QuarantineError`` never escapes ingest: it becomes a row in ``quarantine.parquet``.
"""

from __future__ import annotations

from enum import StrEnum


class ScanLensError(Exception):
    """Base class of every error ScanLens raises on purpose."""


class UserInputError(ScanLensError):
    """Bad input from the user: a missing folder, a malformed labels file, a bad option."""


class WorkdirBusyError(UserInputError):
    """Another process holds the work folder's lock and did not release it within the wait limit."""


class NotWeightsFileError(UserInputError):
    """A weights or checkpoint file is not a plain state dict (or tries to import code when unpickled)."""


class DistributedRunError(ScanLensError):
    """A distributed training failed outside this process: another rank died, hung past the collective
    timeout, or rank 0 failed. The CLI exits 1 with the message (no PHI: it names ranks and error types)."""


class QuarantineReason(StrEnum):
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
    # Hardening: values and sizes checked before anything is allocated or decoded.
    INVALID_VALUE = "invalid_value"  # a header value that is not a number, or out of its legal range
    IMPLAUSIBLE_HEADER = "implausible_header"  # declared sizes the file's own bytes cannot hold
    TOO_LARGE = "too_large"  # over a configured size cap, or out of the worker's memory limit
    UNKNOWN_TRANSFER_SYNTAX = "unknown_transfer_syntax"
    NON_FINITE_VALUES = "non_finite_values"  # NaN or infinite voxels
    # Hardening: what an isolated worker reports when the code reading a file misbehaves.
    DECODER_CRASH = "decoder_crash"  # the worker died (segfault, abort, Rust panic) or raised unexpectedly
    DECODER_TIMEOUT = "decoder_timeout"  # the task ran past its wall-clock limit and the worker was killed
    # Hardening: what the folder walk finds that is not a regular file inside SRC.
    OUTSIDE_SOURCE = "outside_source"  # a symbolic link whose target lies outside SRC (never followed)
    BROKEN_LINK = "broken_link"  # a symbolic link whose target does not exist
    DIRECTORY_LINK = "directory_link"  # a link to a folder inside SRC: not followed (its files are read directly)
    NOT_REGULAR_FILE = "not_regular_file"  # a FIFO, socket or device: never opened
    UNREADABLE_FILE = "unreadable_file"  # the file cannot be opened or read (permissions, I/O error)


class QuarantineError(ScanLensError):
    """A file or a whole scan cannot be ingested; carries a reason code and a human sentence.

    The ``detail`` must not contain PHI (no header values); it may name the problem in
    general terms ("slice spacing jumps from 3.27 mm to 6.54 mm").
    """

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
