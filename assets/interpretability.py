"""Group ``interpretability``: saliency maps with their sanity checks, and the review-board PDF."""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import base64
import json
from pathlib import Path
from typing import List, Optional

import dagster as dg
from pydantic import Field

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.evaluation import cv_evaluation
from assets.resources import ScanLensProject
from pipeline.explain.attribution import METHODS, AttributionConfig
from pipeline.explain.run import ExplainSettings, explain
from pipeline.report import ReportSettings, build_report


class SaliencyConfig(dg.Config):
    source: str = Field(default="auto", description="auto (test set when present), test or oof")
    per_kind: int = Field(default=1, description="cases of each of TP, TN, FP, FN")
    methods: List[str] = Field(default=list(METHODS), description="integrated_gradients, saliency, gradcam, occlusion")
    ig_steps: int = Field(default=32, description="integrated-gradients steps")
    ig_baseline: str = Field(default="zeros", description="zeros or blur")
    memory_budget_mb: Optional[float] = Field(default=None, description="IG batch memory; null = half of free memory")
    occlusion_window: int = 8
    occlusion_stride: int = 8
    sanity_threshold: float = Field(default=0.5, description="fail when randomised-model maps keep Spearman >= this")
    sanity_cases: int = 2


@dg.asset(group_name="interpretability", owners=[OWNER], kinds={"captum", "nifti"}, deps=[cv_evaluation],
          retry_policy=IO_RETRY)
def saliency_maps(config: SaliencyConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Captum maps (IG, saliency, GradCAM, occlusion) for the most confident TP/TN and worst FP/FN,
    mapped to scan space, with randomisation, deletion and completeness checks (``W/saliency/sanity.json``)."""
    attribution = AttributionConfig(methods=tuple(config.methods), ig_steps=config.ig_steps,
                                    ig_baseline=config.ig_baseline, memory_budget_mb=config.memory_budget_mb,
                                    occlusion_window=config.occlusion_window, occlusion_stride=config.occlusion_stride)
    with user_errors_are_final():
        result = explain(project.workdir_path, ExplainSettings(
            source=config.source, per_kind=config.per_kind, attribution=attribution,
            sanity_threshold=config.sanity_threshold, sanity_cases=config.sanity_cases))
    table = "| method | verdict | final Spearman | deletion AUC (random) |\n| --- | --- | --- | --- |\n" + "\n".join(
        f"| {m} | {e['verdict']} | {e['randomisation']['final_spearman']:.3f} | {e['deletion_auc']:.3f} "
        f"({e['deletion_random_auc']:.3f}) |" for m, e in result.sanity["methods"].items())
    first = result.cases.iloc[0]
    preview = project.workdir_path / next(iter(json.loads(first["files"]).values()))
    image = f"\n\n{first['kind']} example:\n\n![overlay](data:image/png;base64,{base64.b64encode(preview.read_bytes()).decode()})"
    return dg.MaterializeResult(metadata={
        "cases": len(result.cases), "source": result.sanity["source"], "recomputed": result.computed,
        "all_sanity_checks_passed": result.sanity["all_passed"],
        "sanity": dg.MetadataValue.md(table + image),
        "sanity_json": dg.MetadataValue.path(str(result.folder / "sanity.json")),
    })


class ReportConfig(dg.Config):
    audience: str = Field(default=ReportSettings().audience, description="who the report is for (title page)")


@dg.asset(group_name="interpretability", owners=[OWNER], kinds={"pdf"}, deps=[saliency_maps], retry_policy=IO_RETRY)
def interpretability_report(config: ReportConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """The review-board PDF (A4, contents, page numbers, CLAIM 2024 appendix) in ``W/reports/``."""
    with user_errors_are_final():
        report = build_report(project.workdir_path, ReportSettings(audience=config.audience))
    return dg.MaterializeResult(metadata={"pdf": dg.MetadataValue.path(str(report.path)), "pages": report.pages,
                                          "sections": dg.MetadataValue.json(list(report.sections)),
                                          "bytes": Path(report.path).stat().st_size})
