"""Decoding the pixels of one DICOM file into modality values.

Decoded frames are ``(rows, cols)`` arrays of modality values, float64: rescale applied,
MONOCHROME1 inverted, colour converted to luminance. Decoding runs only after the header was
read and checked (:func:`pipeline.io.dicom.read_dicom`): its :class:`DicomImage` says what to decode.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import DEFLATED, DicomImage, read_dicom
from pipeline.io.limits import check_finite

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeOptions


def decode_frames(data: bytes, image: DicomImage | None = None) -> np.ndarray:
    """Decode all frames of a DICOM file to modality values, shape ``(frames, rows, cols)``, float64.

    Applies, in order: palette/YBR to RGB, RGB to luminance (ITU-R BT.601 weights), MONOCHROME1
    inversion over the stored bit range, then RescaleSlope/Intercept (per frame for enhanced objects).
    ``image`` is the file's parsed header (parsed here when not given). Raises
    :class:`QuarantineError` (``undecodable_pixels`` or ``truncated``) when decoding fails.
    """
    if image is None:
        image = read_dicom(data, allow_burned_in=True).image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if image.photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                ds = pydicom.dcmread(io.BytesIO(data))
                pixels = apply_color_lut(ds.pixel_array, ds)
            elif image.transfer_syntax == DEFLATED:  # inflated by pydicom (its size was checked when parsed)
                pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
            elif image.pixel_span is not None:  # decode the value in place: no second parse of the header
                offset, length = image.pixel_span
                pixels, _ = get_decoder(UID(image.transfer_syntax)).as_array(
                    data[offset : offset + length],
                    **_decode_options(image),  # type: ignore[arg-type]  # pydicom types **kwargs as DecodeOptions
                )
            else:
                pixels = pixel_array(io.BytesIO(data))
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            raise QuarantineError(QuarantineReason.TOO_LARGE, "decoding ran out of the worker's memory limit") from None
        except BaseException as exc:  # noqa: BLE001 (pylibjpeg-rle raises a Rust PanicException, a BaseException)
            if type(exc).__name__ == "PanicException":
                raise QuarantineError(QuarantineReason.DECODER_CRASH, "the decoder panicked (PanicException)") from None
            message = str(exc).lower()
            if "less than expected" in message or "shorter than" in message or "truncat" in message:
                raise QuarantineError(
                    QuarantineReason.TRUNCATED, "pixel data is shorter than the declared image size"
                ) from None
            raise QuarantineError(
                QuarantineReason.UNDECODABLE_PIXELS,
                f"no installed decoder could decode the pixel data ({type(exc).__name__})",
            ) from None
    pixels = np.asarray(pixels)
    if image.n_frames == 1:
        pixels = pixels[np.newaxis]
    if pixels.shape[:3] != (image.n_frames, image.rows, image.cols) or pixels.ndim not in (3, 4):
        raise QuarantineError(
            QuarantineReason.UNDECODABLE_PIXELS, "decoded pixels do not match the declared image size"
        )
    values = pixels.astype(np.float64)
    if values.ndim == 4:  # colour: (frames, rows, cols, 3)
        values = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    if image.photometric == "MONOCHROME1":
        values = (-1.0 - values) if image.signed else ((2**image.bits_stored - 1) - values)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing rescale is caught just below
        for index, geometry in enumerate(image.frames):
            slope, intercept = geometry.rescale
            if slope != 1.0 or intercept != 0.0:
                values[index] = values[index] * slope + intercept
    check_finite(values)
    return values


def _decode_options(image: DicomImage) -> DecodeOptions:
    """The pixel module as the decoder takes it, for Pixel Data decoded in place."""
    return {
        "rows": image.rows,
        "columns": image.cols,
        "samples_per_pixel": image.samples_per_pixel,
        "bits_allocated": image.bits_allocated,
        "bits_stored": image.bits_stored,
        "pixel_representation": int(image.signed),
        "photometric_interpretation": image.photometric,
        "number_of_frames": image.n_frames,
        "planar_configuration": image.planar_configuration,
        "pixel_keyword": "PixelData",
    }
