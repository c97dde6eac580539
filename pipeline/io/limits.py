"""Size caps for untrusted files, checked from declared sizes before anything is allocated or decoded.

A header can claim anything: a billion frames in a 200 KB file, 2048³ voxels behind a 4 KB NIfTI
header. Every reader computes the bytes an object would need from its declared dimensions, frames,
samples and bits, and checks them against the file's real size and against these caps, first.

>>> limits = ReadLimits()
>>> limits.working_bytes(n_values=512 * 512, bytes_per_value=2) == 512 * 512 * (2 + 8)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import QuarantineError, QuarantineReason, UserInputError

MIB = 1024 * 1024
#: Deflate (zlib, gzip) cannot expand data by more than about 1032:1: a ``.nii.gz`` whose header
#: declares more voxel bytes than this times its size is lying.
DEFLATE_MAX_RATIO = 1032


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one source file may make ScanLens allocate.

    Attributes:
        max_file_mb: files larger than this (MiB) are quarantined as ``too_large`` without being read.
        max_decoded_mb: working memory (MiB) one object may need once decoded: its values as stored
            plus ScanLens's float64 copy (8 bytes per value). DICOM and NIfTI alike.
        max_frames: most frames one DICOM object may declare.
        max_compression_ratio: declared pixel bytes over the encapsulated (compressed) bytes a DICOM
            file holds; real codecs stay far below the default, a lying header does not.
    """

    max_file_mb: int = 2048
    max_decoded_mb: int = 3072
    max_frames: int = 20000
    max_compression_ratio: float = 1000.0

    def __post_init__(self) -> None:
        if min(self.max_file_mb, self.max_decoded_mb, self.max_frames) < 1 or self.max_compression_ratio < 1:
            raise UserInputError(
                "read limits: the file and decoded-memory caps, the frame cap and the compression "
                "ratio cap must each be at least 1"
            )

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * MIB

    @staticmethod
    def working_bytes(n_values: int, bytes_per_value: float) -> int:
        """Bytes to hold ``n_values`` as stored plus as float64."""
        return int(n_values * (bytes_per_value + 8))

    def check_decoded(self, n_values: int, bytes_per_value: float, what: str) -> None:
        """Raise ``too_large`` when decoding ``n_values`` values would need more than ``max_decoded_mb``."""
        needed = self.working_bytes(n_values, bytes_per_value)
        if needed > self.max_decoded_mb * MIB:
            raise QuarantineError(
                QuarantineReason.TOO_LARGE,
                f"{what} would need {needed / MIB:,.0f} MiB once decoded, over the {self.max_decoded_mb:,} MiB cap "
                "(raise it with --max-decoded-mb)",
            )

    def check_file_size(self, size: int) -> None:
        """Raise ``too_large`` for a file over ``max_file_mb``."""
        if size > self.max_file_bytes:
            raise QuarantineError(
                QuarantineReason.TOO_LARGE,
                f"file is {size / MIB:,.0f} MiB, over the {self.max_file_mb:,} MiB cap (raise it with --max-file-mb)",
            )


def check_finite(values: np.ndarray) -> None:
    """Quarantine NaN or infinite values (float pixel data, or a rescale that overflows).

    ScanLens quarantines rather than catalogues such scans: intensity normalisation, training and
    scoring would turn one NaN into NaN everywhere, and a partly NaN image is a conversion error.
    """
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise QuarantineError(QuarantineReason.NON_FINITE_VALUES, f"{bad} of {values.size} values are NaN or infinite")
