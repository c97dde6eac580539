"""The review-board PDF: facts gathered from the work folder, the CLAIM 2024 checklist, the renderer."""

from __future__ import annotations

from pipeline.report.build import SECTIONS, Report, ReportSettings, build_report

__all__ = ["SECTIONS", "Report", "ReportSettings", "build_report"]
