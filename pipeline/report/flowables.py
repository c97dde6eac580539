"""The report's building blocks: styles, number formatting, tables and images (reportlab, A4).

Headings stay with what follows them: the heading styles (and :attr:`Styles.caption`, for a
figure's caption in body type) carry reportlab's ``keepWithNext``, so the document template keeps
each with the next flowable (a figure, a table's first rows) on one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, StyleSheet1, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, Paragraph, Table, TableStyle

#: Page margins (all four sides), in points.
MARGIN = 2 * cm
#: Width of the text column on A4 between the margins, in points.
TEXT_WIDTH = A4[0] - 4 * cm


@dataclass(frozen=True)
class Styles:
    """One report's paragraph styles (reportlab's sample sheet) and its text width in points."""

    sheet: StyleSheet1
    width: float = TEXT_WIDTH

    @classmethod
    def sample(cls) -> Styles:
        """reportlab's sample sheet (a fresh copy), its headings kept with the next flowable."""
        sheet = getSampleStyleSheet()
        for name in ("Heading1", "Heading2", "Heading3"):
            sheet[name].keepWithNext = 1
        sheet.add(ParagraphStyle("Caption", parent=sheet["BodyText"], keepWithNext=1))
        return cls(sheet)

    @property
    def h1(self) -> ParagraphStyle:
        return self.sheet["Heading1"]

    @property
    def h2(self) -> ParagraphStyle:
        return self.sheet["Heading2"]

    @property
    def body(self) -> ParagraphStyle:
        return self.sheet["BodyText"]

    @property
    def caption(self) -> ParagraphStyle:
        """Body type kept on the page of the flowable after it (a figure's caption)."""
        return self.sheet["Caption"]

    @property
    def title(self) -> ParagraphStyle:
        return self.sheet["Title"]


def fmt(value: Any, ci: Any = None) -> str:
    """A value to three decimals (``n/a`` for None), with its confidence interval ``(lo-hi)`` when given."""
    if value is None:
        return "n/a"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def table(rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    """A gridded table in small type whose first row is a header (repeated across pages)."""
    style = getSampleStyleSheet()["BodyText"]
    small = ParagraphStyle("cell", parent=style, fontSize=7.5, leading=9)
    data = [[Paragraph(str(c), small) for c in row] for row in rows]
    out = Table(data, colWidths=widths, repeatRows=1)
    out.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return out


def key_value_table(rows: list[list[Any]], width: float) -> Table:
    """A two-column table (4 cm of keys, the rest of ``width`` for values)."""
    return table(rows, [4 * cm, width - 4 * cm])


def image(path: Path, width: float) -> Image:
    """The PNG at ``path`` scaled to ``width`` points, aspect ratio kept."""
    out = Image(str(path))
    scale = width / out.imageWidth
    out.drawWidth, out.drawHeight = width, out.imageHeight * scale
    return out
