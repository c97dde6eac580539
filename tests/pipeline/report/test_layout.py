"""The PDF's layout: no heading ends its page, and the saliency section names GradCAM's layer.

Positions come from the rendered PDF (pypdf's content-stream visitor): each text line's baseline and
each image's placement, in points from the page's bottom. A heading is stranded when nothing but the
page footer lies below it on its page. Besides the built report, the same story is rendered again
with blank space of a few heights after the contents page, so that page breaks fall elsewhere.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from reportlab.lib.units import cm
from reportlab.platypus import PageBreak, Paragraph, Spacer

from pipeline.report.build import write_pdf
from pipeline.report.flowables import MARGIN
from pipeline.report.inputs import ReportSettings, read_inputs
from pipeline.report.sections import story

HEADING_STYLES = ("Heading1", "Heading2", "Heading3", "Caption")
#: Blank space (cm) inserted after the contents page for the extra renderings.
SHIFTS_CM = (4.0, 8.0, 12.0)


def _is_heading(flowable: Any) -> bool:
    style = getattr(flowable, "style", None)
    while style is not None:
        if style.name in HEADING_STYLES:
            return True
        style = style.parent
    return False


def _headings(body: list[Any]) -> set[tuple[str, float]]:
    """(plain text, font size) of every heading and figure caption in the story."""
    return {(" ".join(f.getPlainText().split()), float(f.style.fontSize)) for f in body
            if isinstance(f, Paragraph) and _is_heading(f)}


def _page_items(pdf: bytes) -> list[list[tuple[str, float, float]]]:
    """Per page: (text or "<image>", baseline or bottom y in points, font size) of what is drawn."""
    pages = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        items: list[tuple[str, float, float]] = []

        def text(t: str, cm_: list[float], tm: list[float], font: Any, size: float, items: list = items) -> None:
            if t.strip():
                items.append((" ".join(t.split()), tm[4] * cm_[1] + tm[5] * cm_[3] + cm_[5], float(size)))

        def operator(op: bytes, args: Any, cm_: list[float], tm: list[float], items: list = items) -> None:
            if op == b"Do":  # an image (an XObject) placed by the current matrix: its bottom edge
                items.append(("<image>", min(cm_[5], cm_[5] + cm_[3]), 0.0))

        page.extract_text(visitor_text=text, visitor_operand_before=operator)
        pages.append(items)
    return pages


def stranded_headings(pdf: bytes, headings: set[tuple[str, float]]) -> list[tuple[int, str]]:
    """(page, heading) for each heading with nothing but the footer below it on its page; raises when
    a heading is not found at all (so a renamed or wrapped heading cannot pass unchecked)."""
    found, stranded = set(), []
    for number, items in enumerate(_page_items(pdf), 1):
        body = [item for item in items if item[1] > MARGIN - 6]  # the footer sits in the bottom margin
        for name, y, size in body:
            heading = next((h for h in headings if h[0] == name and abs(h[1] - size) < 0.5), None)
            if heading is None:
                continue
            found.add(heading)
            if not any(other_y < y - 1 for _, other_y, _ in body):
                stranded.append((number, name))
    assert found == headings, f"headings not found in the PDF: {sorted(headings - found)}"
    return stranded


def _shifted(body: list[Any], shift_cm: float) -> list[Any]:
    after_contents = next(i for i, f in enumerate(body) if isinstance(f, PageBreak)) + 1
    return [*body[:after_contents], Spacer(1, shift_cm * cm), *body[after_contents:]]


@pytest.mark.timeout(120)
def test_no_heading_is_the_last_block_on_its_page(reported_workdir: tuple[Path, dict]) -> None:
    workdir, outputs = reported_workdir
    r = read_inputs(workdir, ReportSettings(), "2025-01-01")
    headings = _headings(story(r))
    assert {"5 Performance", "7 Saliency", "ROC"} <= {name for name, _ in headings}
    assert stranded_headings(outputs["report"].path.read_bytes(), headings) == []
    for shift in SHIFTS_CM:
        buffer = io.BytesIO()
        write_pdf(buffer, _shifted(story(r), shift), "layout-test")
        assert stranded_headings(buffer.getvalue(), headings) == [], f"{shift} cm after the contents"


def test_explain_records_and_the_report_names_gradcams_layer(reported_workdir: tuple[Path, dict]) -> None:
    workdir, outputs = reported_workdir
    sanity = json.loads((workdir / "saliency" / "sanity.json").read_text())
    assert sanity["gradcam_layer"] == {"layer": "layer1", "map_size": [8, 8], "input_size": [32, 32],
                                       "min_map_size": 7}  # 32 px: layer4 would be 1x1
    reader = PdfReader(str(outputs["report"].path))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    assert "GradCAM reads layer1, whose map of 8 x 8 cells for the 32 x 32-voxel input" in text
