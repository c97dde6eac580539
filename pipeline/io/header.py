"""Numeric DICOM header values, parsed through one gate that turns bad values into quarantine reasons.

pydicom reads with validation off (see :func:`pipeline.io.dicom.quiet_pydicom`), so an IS or DS
element may hold ``'abc'``, ``'NaN'``, ``'-1'`` or several values where one is expected. Every
numeric value ScanLens computes with comes through :func:`header_int`, :func:`header_float` or
:func:`header_floats`: absent or empty means the default; anything present but unusable raises
:class:`~pipeline.errors.QuarantineError` with reason ``invalid_value``. Details name the attribute
and the rule, never the value (which could be anything, PHI included).

>>> from pydicom.dataset import Dataset
>>> ds = Dataset(); ds.Rows = 512
>>> header_int(ds, "Rows", None, 1, 65535)
512
>>> header_int(ds, "Columns", 7, 1, 65535)
7
"""

from __future__ import annotations

import math
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.values import convert_value

from pipeline.errors import QuarantineError, QuarantineReason


def raw_value(ds: Dataset, keyword: str) -> Any:
    """The converted value of ``keyword`` (``None`` when absent or empty), without building a DataElement
    (a fifth of the header pass). A value pydicom cannot convert is ``invalid_value``."""
    try:
        element = ds.get_item(keyword)
    except Exception as exc:  # malformed element headers raise many types
        detail = f"{keyword} cannot be read ({type(exc).__name__})"
        raise QuarantineError(QuarantineReason.INVALID_VALUE, detail) from exc
    if element is None:
        return None
    try:
        if isinstance(element, RawDataElement):
            return convert_value(element.VR or dictionary_VR(element.tag), element, None)
        return element.value
    except Exception as exc:
        detail = f"{keyword} cannot be converted ({type(exc).__name__})"
        raise QuarantineError(QuarantineReason.INVALID_VALUE, detail) from exc


def _empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, (str, bytes)) and not value.strip())
        or (isinstance(value, (list, tuple)) and len(value) == 0)
    )


def _single(value: Any) -> Any:
    """A multi-valued element where one value is expected is taken only if it holds exactly one."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) == 1 else _Invalid
    return value


class _Invalid:
    """Marker for a value that is not a single number."""


def _number(value: Any) -> float | None:
    value = _single(value)
    if value is _Invalid:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def header_int(ds: Dataset, keyword: str, default: int | None, lo: int, hi: int) -> int:
    """``keyword`` as a whole number in ``[lo, hi]``; ``default`` when absent (``None``: it is required)."""
    value = raw_value(ds, keyword)
    if _empty(value):
        if default is None:
            raise QuarantineError(QuarantineReason.INVALID_VALUE, f"{keyword} is missing")
        return default
    number = _number(value)
    if number is None or not number.is_integer() or not lo <= number <= hi:
        raise QuarantineError(QuarantineReason.INVALID_VALUE, f"{keyword} is not a whole number from {lo} to {hi}")
    return int(number)


def header_float(ds: Dataset, keyword: str, default: float, positive: bool = False) -> float:
    """``keyword`` as a finite float (``> 0`` with ``positive``); ``default`` when absent or empty."""
    value = raw_value(ds, keyword)
    if _empty(value):
        return default
    number = _number(value)
    if number is None or (positive and number <= 0):
        raise QuarantineError(
            QuarantineReason.INVALID_VALUE, f"{keyword} is not a {'positive ' if positive else ''}finite number"
        )
    return number


def optional_float(ds: Dataset, keyword: str, positive: bool = False) -> float | None:
    """Like :func:`header_float`, but ``None`` when absent or empty."""
    value = raw_value(ds, keyword)
    return None if _empty(value) else header_float(ds, keyword, 0.0, positive)


def header_floats(ds: Dataset, keyword: str, n: int, positive: bool = False) -> tuple[float, ...] | None:
    """``keyword`` as exactly ``n`` finite floats (each ``> 0`` with ``positive``); ``None`` when absent or empty."""
    value = raw_value(ds, keyword)
    if _empty(value):
        return None
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    numbers = [_number(v) for v in values]
    if len(numbers) != n or any(v is None or (positive and v <= 0) for v in numbers):
        raise QuarantineError(
            QuarantineReason.INVALID_VALUE,
            f"{keyword} is not {n} {'positive ' if positive else ''}finite number{'s' if n > 1 else ''}",
        )
    return tuple(float(v) for v in numbers if v is not None)
