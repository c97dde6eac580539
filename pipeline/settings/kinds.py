"""Model kinds: the names ``"2d"``/``"3d"`` that users and partitions use, and the spatial dims they mean.

>>> dims_of("3d"), kind_of(2)
(3, '2d')
"""

from __future__ import annotations

from pipeline.errors import UserInputError

#: Kind names in the order of their spatial dims (the Dagster partitions of the model assets).
MODEL_KINDS = ("2d", "3d")


def dims_of(kind: str) -> int:
    """Spatial dims of a model kind (``"2d"`` -> 2); anything else is a :class:`UserInputError`."""
    if kind not in MODEL_KINDS:
        raise UserInputError(f"model kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    return int(kind[0])


def kind_of(dims: int) -> str:
    """The model kind of ``dims`` spatial dims (2 -> ``"2d"``)."""
    if dims not in (2, 3):
        raise UserInputError(f"a model has 2 or 3 spatial dims, not {dims}")
    return f"{dims}d"
