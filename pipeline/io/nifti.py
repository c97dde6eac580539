"""NIfTI volumes: reading source files, canonical RAS+ orientation and atomic writing.

Every volume ScanLens writes is a NIfTI-1 image reoriented to the closest canonical RAS+ axis
order, with the affine (mm, RAS) in both qform and sform (code 1, scanner). The header carries nothing
else but the content hash in ``descrip``: no file names, no header values, so no PHI.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.limits import DEFLATE_MAX_RATIO, ReadLimits, check_finite
from pipeline.storage import atomic_write

NIFTI_SUFFIXES = (".nii", ".nii.gz")
HASH_PREFIX = "blake2b:"
#: NIfTI-1 stores each dimension as a signed 16-bit integer.
NIFTI1_MAX_EDGE = 32767


@dataclass
class Volume:
    """A canonical RAS+ voxel array with its affine (mm) and the facts the catalogue records."""

    data: np.ndarray
    affine: np.ndarray
    dims: int
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing_mm(self) -> list[float]:
        return [round(float(v), 6) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))]

    @cached_property
    def content_hash(self) -> str:
        """BLAKE2b-256 over dtype, shape, affine (rounded to 1e-6 mm) and voxel bytes."""
        digest = hashlib.blake2b(digest_size=32)
        digest.update(f"{self.data.dtype.str}|{self.data.shape}|".encode())
        digest.update(np.round(self.affine, 6).astype("<f8").tobytes())
        digest.update(np.ascontiguousarray(self.data).tobytes())
        return digest.hexdigest()


def is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def compact_dtype(values: np.ndarray, integral: bool | None = None) -> np.ndarray:
    """Integers stay integers (int16 when they fit, else int32); anything else becomes float32.

    ``integral=True`` promises whole numbers (integer pixels, integer rescale) and skips that check.
    """
    if integral is None:
        integral = bool(values.size) and bool(np.all(np.isfinite(values))) and np.array_equal(values, np.rint(values))
    if integral and values.size:
        low, high = float(values.min()), float(values.max())
        if -32768 <= low and high <= 32767:
            return values.astype(np.int16)
        if -(2**31) <= low and high < 2**31:
            return values.astype(np.int32)
    return values.astype(np.float32)


def canonical_volume(
    data: np.ndarray, affine_ras: np.ndarray, dims: int, warnings: list[str] | None = None, integral: bool | None = None
) -> Volume:
    """Reorient ``data`` (voxel axes as given by ``affine_ras``) to the closest canonical RAS+ order."""
    if max(data.shape) > NIFTI1_MAX_EDGE:
        raise QuarantineError(
            QuarantineReason.UNSUPPORTED_DIMENSIONS,
            f"an axis of {max(data.shape)} voxels; NIfTI-1 volumes hold at most {NIFTI1_MAX_EDGE} per axis",
        )
    image = nib.as_closest_canonical(nib.Nifti1Image(compact_dtype(data, integral), affine_ras))
    return Volume(np.asanyarray(image.dataobj), image.affine, dims, list(warnings or []))


def _check_declared_size(image: Any, path: Path, limits: ReadLimits) -> None:
    """Header dimensions against the file's real size and the caps, before any voxel is read."""
    shape = tuple(int(d) for d in image.shape)
    if not 1 <= len(shape) <= 7 or any(d < 1 for d in shape):
        raise QuarantineError(
            QuarantineReason.INVALID_VALUE, "the NIfTI header's dimensions are not 1 to 7 positive sizes"
        )
    n_voxels = math.prod(shape)
    itemsize = image.header.get_data_dtype().itemsize
    declared = n_voxels * itemsize
    limits.check_decoded(n_voxels, itemsize, f"a {'x'.join(map(str, shape))} NIfTI volume")
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        if declared > DEFLATE_MAX_RATIO * size:
            raise QuarantineError(
                QuarantineReason.IMPLAUSIBLE_HEADER,
                f"the header declares {declared} bytes of voxels; gzip cannot expand {size} bytes that far",
            )
        return
    header: Any = image.header  # NIfTI-1/2 headers have vox_offset; Analyze-style ones have none
    offset = int(float(header["vox_offset"])) if "vox_offset" in header else 0
    if offset + declared > size:
        raise QuarantineError(
            QuarantineReason.TRUNCATED,
            f"the header declares {declared} bytes of voxels from byte {offset}; the file has {size} bytes",
        )


def read_nifti(path: Path, limits: ReadLimits | None = None) -> Volume:
    """Load a source NIfTI file as a canonical volume, or raise :class:`QuarantineError`.

    The header's dimensions are checked against the file's size and ``limits`` before any voxel is
    read. 4D files whose fourth axis has length 1 are squeezed; other 4D/5D files (time series,
    multi-channel) are quarantined as ``unsupported_dimensions``. 2D files become 2D scans. NaN or
    infinite voxels quarantine the file (``non_finite_values``).
    """
    try:
        # nib.load is typed as returning the FileBasedImage base; a .nii/.nii.gz loads as a NIfTI-1/2 image
        # (NIfTI-2 subclasses NIfTI-1), and one that lacks .dataobj or .affine fails below and is quarantined.
        image = cast("nib.Nifti1Image", nib.load(str(path)))
    except Exception as exc:  # noqa: BLE001
        raise QuarantineError(
            QuarantineReason.UNREADABLE_NIFTI, f"nibabel cannot read it ({type(exc).__name__})"
        ) from None
    try:
        _check_declared_size(image, path, limits or ReadLimits())
    except QuarantineError:
        raise
    except Exception as exc:  # noqa: BLE001 (a header field nibabel cannot interpret)
        raise QuarantineError(
            QuarantineReason.UNREADABLE_NIFTI, f"the header cannot be interpreted ({type(exc).__name__})"
        ) from None
    try:
        data = np.asarray(image.dataobj, dtype=np.float64)
        affine = image.affine
    except MemoryError:
        raise QuarantineError(
            QuarantineReason.TOO_LARGE, "reading the voxels ran out of the worker's memory limit"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise QuarantineError(
            QuarantineReason.UNREADABLE_NIFTI, f"nibabel cannot read it ({type(exc).__name__})"
        ) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise QuarantineError(
            QuarantineReason.UNSUPPORTED_DIMENSIONS,
            f"{data.ndim}D NIfTI with shape {tuple(data.shape)}; only 2D and 3D scans are ingested",
        )
    dims = 2 if data.ndim == 2 or (data.ndim == 3 and 1 in data.shape) else 3
    if data.ndim == 1:
        raise QuarantineError(QuarantineReason.UNSUPPORTED_DIMENSIONS, "1D NIfTI; only 2D and 3D scans are ingested")
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise QuarantineError(QuarantineReason.INCONSISTENT_GEOMETRY, "the NIfTI affine is singular or not finite")
    check_finite(data)
    return canonical_volume(data, affine, dims)


def stored_content_hash(path: Path) -> str | None:
    """The content hash a ScanLens volume carries in its header ``descrip`` field, or None."""
    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):  # (a NIfTI-2 image is a Nifti1Image too)
            return None
        descrip = image.header["descrip"].tobytes().rstrip(b"\0").decode("ascii", "replace")
    except Exception:  # noqa: BLE001 (a file nibabel cannot read holds no hash)
        return None
    return descrip[len(HASH_PREFIX) :] if descrip.startswith(HASH_PREFIX) else None


def write_volume(path: Path, volume: Volume) -> None:
    """Write ``volume`` atomically as NIfTI-1 (gzip if the name ends in .gz).

    The header's ``descrip`` holds ``blake2b:<content hash>`` so that a re-run, even after a crash
    that lost the tables, recognises a volume that is already written. The file is not fsync'ed
    here: ingest syncs the volumes it wrote (:func:`pipeline.ingest.run._sync_volumes`) before writing the tables.
    """
    image = nib.Nifti1Image(volume.data, volume.affine)
    image.header["descrip"] = (HASH_PREFIX + volume.content_hash).encode()
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)), durable=False)
