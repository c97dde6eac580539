"""Checks of a DICOM file's pixel module and encoded pixel data, before anything is decoded.

Everything here works from the header's declared numbers and the bytes the file holds: the pixel
module's values in their legal ranges, native pixel data against the declared size, encapsulated
pixel data against its frame count, the compression-ratio cap and the codestream's own image size,
and a deflated data set inflated in bounded steps (pydicom would inflate it whole, whatever its size).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets, parse_fragments
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEG2000TransferSyntaxes

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.header import header_int
from pipeline.io.limits import MIB, ReadLimits

#: The first this many inflated bytes of a deflated data set must hold its header (up to Pixel Data).
DEFLATED_HEADER_BYTES = 64 * MIB
PIXEL_DATA_TAG = 0x7FE00010


@dataclass(frozen=True)
class PixelLayout:
    """The pixel module's numbers, each checked against its legal range."""

    rows: int
    cols: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar: int
    n_frames: int

    @property
    def n_values(self) -> int:
        return self.rows * self.cols * self.samples * self.n_frames

    @property
    def stored_bytes(self) -> int:
        return (self.n_values * self.bits_allocated + 7) // 8


def pixel_layout(ds: Dataset, limits: ReadLimits) -> PixelLayout:
    rows = header_int(ds, "Rows", None, 1, 65535)
    cols = header_int(ds, "Columns", None, 1, 65535)
    samples = header_int(ds, "SamplesPerPixel", 1, 1, 4)
    if samples == 2:
        raise QuarantineError(QuarantineReason.INVALID_VALUE, "SamplesPerPixel is 2 (1, 3 or 4 are defined)")
    bits_allocated = header_int(ds, "BitsAllocated", 16, 1, 64)
    if bits_allocated != 1 and bits_allocated % 8:
        raise QuarantineError(QuarantineReason.INVALID_VALUE, "BitsAllocated is neither 1 nor a multiple of 8")
    bits_stored = header_int(ds, "BitsStored", bits_allocated, 1, bits_allocated)
    signed = header_int(ds, "PixelRepresentation", 0, 0, 1) == 1
    planar = header_int(ds, "PlanarConfiguration", 0, 0, 1)
    n_frames = header_int(ds, "NumberOfFrames", 1, 1, limits.max_frames)
    return PixelLayout(rows, cols, samples, bits_allocated, bits_stored, signed, planar, n_frames)


def check_pixel_bytes(layout: PixelLayout, syntax: UID, value: bytes, limits: ReadLimits, warnings: list[str]) -> None:
    """Declared pixel bytes against the bytes the file holds, before anything is decoded."""
    expected, actual = layout.stored_bytes, len(value)
    if not syntax.is_compressed:
        if actual < expected:
            raise QuarantineError(
                QuarantineReason.TRUNCATED,
                f"pixel data has {actual} bytes, {expected} expected for the declared image size",
            )
        if actual > expected + 1:
            warnings.append(f"pixel data holds {actual - expected} bytes more than the declared image size; ignored")
        return
    fragments = _count_fragments(value)
    if fragments < layout.n_frames:
        raise QuarantineError(
            QuarantineReason.IMPLAUSIBLE_HEADER,
            f"{layout.n_frames} frames declared but the encapsulated pixel data has {fragments} fragment(s)",
        )
    if expected > limits.max_compression_ratio * max(actual, 1):
        raise QuarantineError(
            QuarantineReason.IMPLAUSIBLE_HEADER,
            f"declared image size ({expected} bytes) is over {limits.max_compression_ratio:g} times the "
            f"{actual} compressed bytes in the file",
        )
    first = _first_fragment(value) if syntax in JPEG2000TransferSyntaxes else None
    size = codestream_size(first, syntax) if first is not None else None
    if size is not None and size != (layout.rows, layout.cols):
        raise QuarantineError(
            QuarantineReason.IMPLAUSIBLE_HEADER,
            f"the compressed image is {size[0]}x{size[1]} pixels, the header declares {layout.rows}x{layout.cols}",
        )


def _count_fragments(value: bytes) -> int:
    """Fragments of encapsulated pixel data (after the Basic Offset Table item); 0 when malformed."""
    buffer = io.BytesIO(value)
    try:
        parse_basic_offsets(buffer)  # leaves the buffer at the first fragment
        return parse_fragments(buffer)[0]
    except Exception:  # noqa: BLE001 (malformed item tags and lengths)
        return 0


def _first_fragment(value: bytes) -> bytes | None:
    buffer = io.BytesIO(value)
    try:
        parse_basic_offsets(buffer)
        return next(generate_fragments(buffer), None)
    except Exception:  # noqa: BLE001 (malformed item tags and lengths)
        return None


def codestream_size(fragment: bytes, syntax: UID) -> tuple[int, int] | None:
    """(rows, columns) a JPEG 2000 codestream declares in its SIZ marker (ISO/IEC 15444-1 A.5.1), or None.

    >>> siz = b"\\xff\\x4f\\xff\\x51" + bytes(4) + (512).to_bytes(4, "big") + (300).to_bytes(4, "big") + bytes(8)
    >>> codestream_size(siz, JPEG2000TransferSyntaxes[0])
    (300, 512)
    """
    if syntax not in JPEG2000TransferSyntaxes or len(fragment) < 24:
        return None
    offset = 0
    if fragment.startswith(b"\x00\x00\x00\x0cjP  "):  # a JP2 file wrapper: skip to its codestream box
        offset = fragment.find(b"jp2c")
        if offset < 0:
            return None
        offset += 4
    if fragment[offset : offset + 4] != b"\xff\x4f\xff\x51":  # SOC, then SIZ
        return None
    x, y, x0, y0 = (int.from_bytes(fragment[offset + 8 + 4 * k : offset + 12 + 4 * k], "big") for k in range(4))
    return (y - y0, x - x0) if x > x0 and y > y0 else None


def check_deflated(data: bytes, limits: ReadLimits) -> None:
    """Inflate a deflated data set in bounded steps: it may not inflate past its header plus its declared pixels.

    pydicom inflates a deflated file whole before parsing it, so a 1 MB file can claim gigabytes.
    Files of other transfer syntaxes, and files without a readable file meta, pass unchanged (the
    parse that follows judges them).
    """
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:  # noqa: BLE001
        return
    if str(meta.get("TransferSyntaxUID", "") or "").strip() != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        head = inflater.decompress(data[fp.tell() :], DEFLATED_HEADER_BYTES)
        ds = read_dataset(io.BytesIO(head), False, True, stop_when=lambda tag, vr, length: tag == PIXEL_DATA_TAG)
        layout = pixel_layout(ds, limits)
        allowed = len(head) + layout.stored_bytes + MIB
        rest = inflater.decompress(inflater.unconsumed_tail, max(1, allowed - len(head) + 1))
    except QuarantineError:
        raise
    except Exception as exc:  # a corrupt deflate stream or header
        detail = f"the deflated data set cannot be inflated ({type(exc).__name__})"
        raise QuarantineError(QuarantineReason.NOT_DICOM, detail) from exc
    if len(head) + len(rest) > allowed:
        raise QuarantineError(
            QuarantineReason.IMPLAUSIBLE_HEADER,
            "the deflated data set inflates past its header and declared image size (a decompression bomb)",
        )
