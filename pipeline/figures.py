"""Matplotlib on the Agg backend, titles that fit, and figures as reproducible PNG bytes.

Import ``plt`` from here so the backend is set before pyplot loads. ``Software`` metadata is left out
so that the same figure gives the same bytes (callers write them only when they changed).
:func:`lay_out` wraps (and, where one word is too wide, shrinks) every axes title to its axes' width
and every figure-level text (the suptitle) to the figure's width, so no title is clipped at an edge.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.text import Text

__all__ = ["fit_text", "lay_out", "plt", "png_bytes"]
#: Smallest font size (points) a title is shrunk to before its words are broken.
MIN_FONTSIZE = 6.0


def _width(text: Text, content: str, renderer: Any) -> float:
    text.set_text(content)
    return float(text.get_window_extent(renderer).width)


def _wrap(text: Text, original: str, width: float, renderer: Any, break_words: bool) -> list[str]:
    """Greedy word wrap of ``original`` (its own line breaks kept) to ``width`` display pixels; with
    ``break_words``, a word wider than ``width`` on its own is broken between characters."""
    lines: list[str] = []
    for paragraph in original.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if _width(text, candidate, renderer) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while break_words and len(line) > 1 and _width(text, line, renderer) > width:
                cut = next((i for i in range(len(line) - 1, 1, -1) if _width(text, line[:i], renderer) <= width), 1)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def fit_text(text: Text, width: float, renderer: Any, min_fontsize: float = MIN_FONTSIZE) -> None:
    """Make ``text`` at most ``width`` display pixels wide: wrap it at spaces; where one word alone is
    still wider, shrink the font (down to ``min_fontsize``), then break that word."""
    original = text.get_text()
    if not original.strip() or width <= 0:
        return
    while True:
        lines = _wrap(text, original, width, renderer, break_words=False)
        widest = max(_width(text, line, renderer) for line in lines)
        size = float(text.get_fontsize())
        if widest <= width:
            break
        if size <= min_fontsize:
            lines = _wrap(text, original, width, renderer, break_words=True)
            break
        text.set_fontsize(max(min_fontsize, size * width / widest * 0.98))
    text.set_text("\n".join(lines))


def _fit_titles(figure: Any) -> bool:
    """Fit every axes title and figure-level text; whether any of them changed."""
    renderer = figure.canvas.get_renderer()
    fits: list[tuple[Text, float]] = [(axis.title, axis.get_window_extent(renderer).width) for axis in figure.axes]
    for text in figure.texts:  # the suptitle and other figure-level text placed in figure fractions
        if text.get_transform() not in (figure.transFigure, figure.transSubfigure):
            continue
        x = float(text.get_position()[0])
        room = {"center": 2 * min(x, 1 - x), "left": 1 - x, "right": x}[text.get_horizontalalignment()]
        fits.append((text, 0.98 * room * figure.bbox.width))
    changed = False
    for text, width in fits:
        before = (text.get_text(), text.get_fontsize())
        fit_text(text, width, renderer)
        changed |= (text.get_text(), text.get_fontsize()) != before
    return changed


def lay_out(figure: Any) -> None:
    """Tighten the layout, fit titles to their room (:func:`fit_text`), and tighten again around them
    (until the titles fit the tightened axes: tightening can narrow an axes)."""
    figure.tight_layout()
    for _ in range(3):
        if not _fit_titles(figure):
            break
        figure.tight_layout()


def png_bytes(figure: Any) -> bytes:
    """Lay out (:func:`lay_out`), render and close ``figure``; return its PNG bytes."""
    buffer = io.BytesIO()
    lay_out(figure)
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
