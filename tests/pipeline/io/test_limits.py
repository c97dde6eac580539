"""Declared sizes are checked against the file and the caps before anything is allocated or decoded."""

from __future__ import annotations

import gzip
import io
import resource
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import DicomImage, read_dicom
from pipeline.io.dicom_pixels import decode_frames
from pipeline.io.limits import ReadLimits
from pipeline.io.nifti import read_nifti
from tests.dicom_factory import write_series, z_positions


def _parse(data: bytes, limits: ReadLimits | None = None) -> DicomImage:
    return read_dicom(data, limits).image


def _reason(data: bytes, limits: ReadLimits | None = None) -> QuarantineReason:
    with pytest.raises(QuarantineError) as caught:
        _parse(data, limits)
    return caught.value.reason


def _edited(path: Path | str, **values: object) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_billion_frames_in_a_compressed_file_is_refused_at_once_without_allocating() -> None:
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    assert path is not None
    data = _edited(path, NumberOfFrames=1_000_000_000)
    before, start = _peak_rss_mb(), time.perf_counter()
    assert _reason(data, ReadLimits(max_frames=2_000_000_000)) is QuarantineReason.IMPLAUSIBLE_HEADER
    assert time.perf_counter() - start < 1.0 and _peak_rss_mb() - before < 50
    assert _reason(data) is QuarantineReason.INVALID_VALUE  # over the default frame cap in the first place


def test_a_compressed_image_cannot_claim_more_than_the_compression_ratio_cap() -> None:
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    assert path is not None
    data = _edited(path, Rows=60000, Columns=60000)
    assert _reason(data) is QuarantineReason.IMPLAUSIBLE_HEADER


def test_an_image_over_the_decoded_memory_cap_is_too_large(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, z_positions(1), rows=600, cols=600)  # 360,000 values: 3.4 MiB with float64
    assert _reason(path.read_bytes(), ReadLimits(max_decoded_mb=2)) is QuarantineReason.TOO_LARGE
    assert _parse(path.read_bytes(), ReadLimits(max_decoded_mb=4)).rows == 600


def test_native_pixel_data_shorter_than_declared_is_truncated_and_longer_is_a_warning(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, z_positions(1), rows=6, cols=5)
    assert _reason(_edited(path, Rows=600)) is QuarantineReason.TRUNCATED
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + b"\0" * 40
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    instance = _parse(out.getvalue())
    assert any("more than the declared image size" in w for w in instance.warnings)


@pytest.mark.parametrize(("keyword", "value"), [("SamplesPerPixel", 0), ("BitsAllocated", 12), ("Rows", 0),
                                                ("BitsStored", 17), ("PixelRepresentation", 2)])
def test_impossible_pixel_module_values_are_invalid(tmp_path: Path, keyword: str, value: int) -> None:
    [path] = write_series(tmp_path, z_positions(1))
    assert _reason(_edited(path, **{keyword: value})) is QuarantineReason.INVALID_VALUE


def test_an_unknown_transfer_syntax_is_quarantined(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, z_positions(1))
    data = path.read_bytes()
    explicit_le = b"1.2.840.10008.1.2.1\0"
    assert data.count(explicit_le) == 1
    for syntax in (b"1.2.3.4.5.6.7.8.9.0\0", b"1.2.840.10008.1.1\0\0", b"\0" * 20):  # made up; Verification; empty
        assert _reason(data.replace(explicit_le, syntax)) is QuarantineReason.UNKNOWN_TRANSFER_SYNTAX


def test_a_rescale_that_overflows_is_quarantined_as_non_finite(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, z_positions(1), slope=1e308)
    data = path.read_bytes()
    with pytest.raises(QuarantineError) as caught:
        decode_frames(data, _parse(data))
    assert caught.value.reason is QuarantineReason.NON_FINITE_VALUES


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_a_nifti_header_declaring_2048_cubed_in_a_small_file_is_refused_before_reading(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    image.header.set_data_shape((2048, 2048, 2048))
    path = tmp_path / "lie.nii"
    path.write_bytes(image.header.binaryblock + b"\0" * 4 + b"\0" * 128)
    before = _peak_rss_mb()
    with pytest.raises(QuarantineError) as caught:
        read_nifti(path, ReadLimits(max_decoded_mb=10**6))
    assert caught.value.reason is QuarantineReason.TRUNCATED and _peak_rss_mb() - before < 50
    with pytest.raises(QuarantineError) as caught:
        read_nifti(path)
    assert caught.value.reason is QuarantineReason.TOO_LARGE
    gz = tmp_path / "lie.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(QuarantineError) as caught:
        read_nifti(gz, ReadLimits(max_decoded_mb=10**6))
    assert caught.value.reason is QuarantineReason.IMPLAUSIBLE_HEADER  # deflate cannot expand that far


def test_a_nifti_full_of_nan_is_quarantined(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(QuarantineError) as caught:
        read_nifti(path)
    assert caught.value.reason is QuarantineReason.NON_FINITE_VALUES and "64 of 64" in caught.value.detail
    assert read_nifti(_nifti(tmp_path / "ok.nii.gz", np.ones((4, 4, 4), np.float32))).dims == 3
