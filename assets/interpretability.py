"""Group ``interpretability``: saliency maps with their sanity checks, and the review-board PDF."""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import json
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import dagster as dg
from pydantic import Field

from assets.common import IO_RETRY, OWNER, markdown_image, user_errors_are_final
from assets.config import config_class, settings_from
from assets.evaluation import cv_evaluation
from assets.resources import ScanLensProject
from pipeline.explain.attribution import AttributionConfig
from pipeline.explain.run import ExplainSettings, explain
from pipeline.layout import Workdir
from pipeline.report import ReportSettings, build_report

if TYPE_CHECKING:  # the class is made at import time; to a type checker it is a Dagster config
    SaliencyConfig: TypeAlias = dg.Config
else:
    SaliencyConfig = config_class(
        "SaliencyConfig",
        ExplainSettings,
        AttributionConfig,
        doc="Which cases are explained, by which methods, checked how.",
    )


@dg.asset(
    group_name="interpretability",
    owners=[OWNER],
    kinds={"captum", "nifti"},
    deps=[cv_evaluation],
    retry_policy=IO_RETRY,
)
def saliency_maps(config: SaliencyConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Captum maps (IG, saliency, GradCAM, occlusion) for the most confident TP/TN and worst FP/FN,
    mapped to scan space, with randomisation, deletion and completeness checks (``W/saliency/sanity.json``)."""
    with user_errors_are_final():
        settings = settings_from(config, ExplainSettings, attribution=settings_from(config, AttributionConfig))
        result = explain(project.workdir_path, settings)
    table = "| method | verdict | final Spearman | deletion AUC (random) |\n| --- | --- | --- | --- |\n" + "\n".join(
        f"| {m} | {e['verdict']} | {e['randomisation']['final_spearman']:.3f} | {e['deletion_auc']:.3f} "
        f"({e['deletion_random_auc']:.3f}) |"
        for m, e in result.sanity["methods"].items()
    )
    first = result.cases.iloc[0]
    preview = project.workdir_path / next(iter(json.loads(first["files"]).values()))
    image = f"\n\n{first['kind']} example:\n\n{markdown_image(preview, 'overlay')}"
    return dg.MaterializeResult(
        metadata={
            "cases": len(result.cases),
            "source": result.sanity["source"],
            "recomputed": result.computed,
            "all_sanity_checks_passed": result.sanity["all_passed"],
            "sanity": dg.MetadataValue.md(table + image),
            "sanity_json": dg.MetadataValue.path(str(Workdir(project.workdir_path).sanity)),
        }
    )


class ReportConfig(dg.Config):
    audience: str = Field(default=ReportSettings().audience, description="who the report is for (title page)")


@dg.asset(group_name="interpretability", owners=[OWNER], kinds={"pdf"}, deps=[saliency_maps], retry_policy=IO_RETRY)
def interpretability_report(config: ReportConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """The review-board PDF (A4, contents, page numbers, CLAIM 2024 appendix) in ``W/reports/``."""
    with user_errors_are_final():
        report = build_report(project.workdir_path, ReportSettings(audience=config.audience))
    return dg.MaterializeResult(
        metadata={
            "pdf": dg.MetadataValue.path(str(report.path)),
            "pages": report.pages,
            "sections": dg.MetadataValue.json(list(report.sections)),
            "bytes": Path(report.path).stat().st_size,
        }
    )
