"""Matplotlib on the Agg backend, and figures as reproducible PNG bytes.

Import ``plt`` from here so the backend is set before pyplot loads. ``Software`` metadata is left out
so that the same figure gives the same bytes (callers write them only when they changed).
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plt", "png_bytes"]


def png_bytes(figure: Any) -> bytes:
    """Lay out, render and close ``figure``; return its PNG bytes."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
