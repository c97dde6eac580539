"""The interpretability report for a review board: ``W/reports/scanlens_report_<hash>.pdf``.

A4, page numbers, a table of contents, and the sections of :data:`SECTIONS` (each built by
:mod:`pipeline.report.sections`). Built with reportlab from the work folder's files only
(:mod:`pipeline.report.inputs`): pseudonymous by construction, PDF metadata set explicitly. The
same inputs give the same bytes (reportlab's invariant mode); an unchanged work folder rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import cm
from reportlab.platypus import Paragraph, SimpleDocTemplate

from pipeline import __version__
from pipeline.locking import writes_workdir
from pipeline.report import claim, flowables, inputs, sections
from pipeline.report.flowables import MARGIN
from pipeline.report.inputs import ReportInputs, ReportSettings, read_inputs
from pipeline.report.sections import SECTIONS, story
from pipeline.storage import atomic_write, atomic_write_bytes

__all__ = ["SECTIONS", "Report", "ReportSettings", "build_report", "write_pdf"]

log = logging.getLogger(__name__)


class _Document(SimpleDocTemplate):
    def afterFlowable(self, flowable: Any) -> None:  # reportlab's hook name
        if isinstance(flowable, Paragraph) and flowable.style.name in ("Heading1", "Heading2"):
            level = 0 if flowable.style.name == "Heading1" else 1
            self.notify("TOCEntry", (level, flowable.getPlainText(), self.page))


def _page_number(canvas: Any, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(A4[0] - MARGIN, 1.2 * cm, f"Page {doc.page}")
    canvas.drawString(MARGIN, 1.2 * cm, "ScanLens interpretability report - pseudonymised, no PHI")
    canvas.restoreState()


def write_pdf(target: Path | BinaryIO, body: list[Any], model_id: str) -> int:
    """Lay ``body`` (flowables) out on A4 with page numbers and a table of contents into ``target``
    (a path or a binary file); return the page count. Metadata is fixed (reportlab's invariant mode)."""
    doc = _Document(
        str(target) if isinstance(target, Path) else target,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title="ScanLens interpretability report",
        author="ScanLens",
        subject=f"Model {model_id}",
        creator=f"ScanLens {__version__}",
        keywords="",
        invariant=1,
    )
    doc.multiBuild(body, onFirstPage=_page_number, onLaterPages=_page_number)
    return int(doc.page)


@dataclass(frozen=True)
class Report:
    path: Path
    pages: int
    sections: tuple[str, ...] = SECTIONS


#: The modules whose code shapes the PDF: a change to any of them makes a new report.
RENDERERS: tuple[ModuleType, ...] = (claim, flowables, inputs, sections)


def _key(r: ReportInputs) -> str:
    """12 hex digits of the hash of everything the PDF shows, and of the code that draws it."""
    code = [hashlib.sha256(Path(module.__file__ or "").read_bytes()).hexdigest() for module in RENDERERS]
    payload = [
        r.metrics,
        r.sanity,
        r.drift,  # the champion's score drift, quoted in the performance section
        r.cases.to_dict("records"),
        [c["model_id"] for c in r.cards],
        asdict(r.settings),
        r.date,
        __version__,
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        code,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@writes_workdir("report")
def build_report(workdir: Path, settings: ReportSettings = ReportSettings(), today: dt.date | None = None) -> Report:
    """Write the PDF (unless an identical one exists) and return its path and page count.
    ``W/reports/<name>.json`` beside it records the page count and sections."""
    r = read_inputs(workdir, settings, (today or dt.date.today()).isoformat())
    path = r.workdir.report(_key(r))
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        log.info("report up to date: %s", path)
        return Report(path, int(json.loads(sidecar.read_text())["pages"]))
    body = story(r)
    pages: list[int] = []
    atomic_write(path, lambda tmp: pages.append(write_pdf(tmp, body, str(r.card["model_id"]))))
    atomic_write_bytes(sidecar, json.dumps({"pages": pages[0], "sections": list(SECTIONS)}).encode())
    log.info("report: %s (%d pages)", path, pages[0])
    return Report(path, pages[0])
