"""Numeric header values go through one gate: bad values become ``invalid_value``, never an exception."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.header import header_float, header_floats, header_int, optional_float


def _ds(**values: object) -> Dataset:
    """A data set holding raw (unconverted) elements, as pydicom reads them from a file."""
    ds = Dataset()
    for keyword, value in values.items():
        tag = tag_for_keyword(keyword)
        text = "\\".join(value) if isinstance(value, list) else str(value)
        ds[tag] = RawDataElement(Tag(tag), dictionary_VR(tag), len(text), text.encode(), 0, False, True)
    return ds


@pytest.mark.parametrize("value", ["abc", "NaN", "-1", "0", "1.5", "inf", "1e12", ["2", "3"]])
def test_bad_frame_counts_are_invalid_values(value: object) -> None:
    ds = _ds(NumberOfFrames=value)
    with pytest.raises(QuarantineError) as caught:
        header_int(ds, "NumberOfFrames", 1, 1, 20000)
    assert caught.value.reason is QuarantineReason.INVALID_VALUE
    assert "NumberOfFrames" in caught.value.detail and str(value) not in caught.value.detail.replace("20000", "")


def test_absent_or_empty_values_take_the_default() -> None:
    assert header_int(_ds(), "NumberOfFrames", 1, 1, 10) == 1
    assert header_int(_ds(NumberOfFrames=""), "NumberOfFrames", 1, 1, 10) == 1
    assert header_float(_ds(), "RescaleSlope", 1.0) == 1.0
    assert optional_float(_ds(), "SliceThickness") is None
    assert header_floats(_ds(), "PixelSpacing", 2) is None
    with pytest.raises(QuarantineError):
        header_int(_ds(), "Rows", None, 1, 65535)  # required


def test_floats_must_be_finite_and_of_the_right_count() -> None:
    assert header_floats(_ds(PixelSpacing=["0.5", "0.7"]), "PixelSpacing", 2, positive=True) == (0.5, 0.7)
    for bad in (["inf", "0.7"], ["0.5"], ["0", "0.7"], ["x", "y"]):
        with pytest.raises(QuarantineError) as caught:
            header_floats(_ds(PixelSpacing=bad), "PixelSpacing", 2, positive=True)
        assert caught.value.reason is QuarantineReason.INVALID_VALUE
    with pytest.raises(QuarantineError):
        header_float(_ds(RescaleSlope="abc"), "RescaleSlope", 1.0)
