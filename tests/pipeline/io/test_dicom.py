"""Reading single DICOM files: header reject checks, decoding, transfer syntaxes, photometric handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import DicomImage, read_dicom
from pipeline.io.dicom_pixels import decode_frames
from tests.conftest import DICOM_DATA, requires_shared
from tests.dicom_factory import slice_pixels, write_series

WHEEL = DICOM_DATA / "pydicom_testfiles" / "from_pydicom_wheel"


def _parse(path: Path) -> DicomImage:
    return read_dicom(path.read_bytes()).image


@requires_shared
def test_nine_transfer_syntaxes_decode_to_identical_pixels() -> None:
    files = sorted((DICOM_DATA / "transfer_syntaxes" / "In").glob("*.dcm"))
    syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert len(files) == 9 and len(syntaxes) >= 7  # explicit/implicit/big endian, RLE, JPEG-LL, JPEG-LS, J2K
    reference = decode_frames(files[0].read_bytes())
    assert reference.shape == (1, 384, 384) and reference.std() > 0
    for path in files[1:]:
        np.testing.assert_array_equal(decode_frames(path.read_bytes()), reference, err_msg=path.name)


@requires_shared
@pytest.mark.parametrize(
    ("relpath", "reason", "stage"),
    [
        ("JPEG-lossy.dcm", QuarantineReason.UNDECODABLE_PIXELS, "decode"),
        ("MR_truncated.dcm", QuarantineReason.TRUNCATED, "parse"),
        ("no_meta.dcm", QuarantineReason.NO_FILE_META, "parse"),
        ("ExplVR_BigEndNoMeta.dcm", QuarantineReason.NO_FILE_META, "parse"),
        ("dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000", QuarantineReason.NO_PIXEL_DATA, "parse"),
        ("dicomdirtests/DICOMDIR", QuarantineReason.DICOMDIR_INDEX, "parse"),
        ("README.txt", QuarantineReason.NOT_DICOM, "parse"),
    ],
)
def test_broken_files_raise_a_specific_reason(relpath: str, reason: QuarantineReason, stage: str) -> None:
    path = WHEEL / relpath
    with pytest.raises(QuarantineError) as caught:
        if stage == "parse":
            _parse(path)
        else:
            _parse(path)  # the header is fine ...
            decode_frames(path.read_bytes())  # ... the pixels are not
    assert caught.value.reason is reason


@requires_shared
def test_rgb_is_converted_to_luminance() -> None:
    path = WHEEL / "SC_rgb_rle.dcm"
    rgb = pydicom.dcmread(path).pixel_array.astype(float)
    gray = decode_frames(path.read_bytes())
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(gray[0], expected)


@requires_shared
def test_enhanced_multiframe_decodes_every_frame() -> None:
    frames = decode_frames((DICOM_DATA / "pydicom_testfiles" / "from_pydicom_data" / "emri_small.dcm").read_bytes())
    assert frames.shape == (10, 64, 64)
    assert not np.array_equal(frames[0], frames[9])


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, [[0, 0, 0]], slope=2.0, intercept=-1000.0)
    np.testing.assert_array_equal(decode_frames(path.read_bytes())[0], slice_pixels(0, 6, 5) * 2.0 - 1000.0)


def test_monochrome1_is_inverted_over_the_stored_range(tmp_path: Path) -> None:
    def mono1(ds: pydicom.Dataset, k: int) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.PixelData = np.array([[0, 4095], [1000, 2000]], dtype=np.uint16).tobytes()
        ds.Rows, ds.Columns = 2, 2

    [path] = write_series(tmp_path, [[0, 0, 0]], mutate=mono1, intercept=0.0)
    np.testing.assert_array_equal(decode_frames(path.read_bytes())[0], [[4095, 0], [3095, 2095]])


def test_burned_in_annotation_is_quarantined_unless_allowed(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, [[0, 0, 0]], mutate=lambda ds, k: setattr(ds, "BurnedInAnnotation", "YES"))
    with pytest.raises(QuarantineError) as caught:
        _parse(path)
    assert caught.value.reason is QuarantineReason.BURNED_IN_ANNOTATION
    allowed = read_dicom(path.read_bytes(), allow_burned_in=True)
    assert allowed.image.rows == 6


def test_the_header_keeps_identifiers_as_read_but_never_shows_them(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, [[0, 0, 0]], patient_id=" MRN-12345 ")
    header = read_dicom(path.read_bytes())
    ds = pydicom.dcmread(path)
    assert header.identifiers.patient_id == "MRN-12345"
    assert header.identifiers.series_uid == ds.SeriesInstanceUID
    assert header.image.warnings == []
    assert "MRN-12345" not in repr(header) and ds.SeriesInstanceUID not in repr(header)


def test_a_file_without_series_uid_says_so(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, [[0, 0, 0]], mutate=lambda ds, k: delattr(ds, "SeriesInstanceUID"))
    header = read_dicom(path.read_bytes())
    assert header.identifiers.series_uid == ""
    assert header.image.warnings == ["no SeriesInstanceUID: the file is its own series"]
