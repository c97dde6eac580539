"""The review-board PDF: facts gathered from the work folder, the CLAIM 2024 checklist, the renderer."""

from __future__ import annotations

from pipeline.report.build import Report, build_report
from pipeline.report.inputs import ReportSettings
from pipeline.report.sections import SECTIONS

__all__ = ["SECTIONS", "Report", "ReportSettings", "build_report"]
