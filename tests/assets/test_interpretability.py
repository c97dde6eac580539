"""Dagster assets of the interpretability group, materialised in-process after an evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from assets.definitions import defs
from assets.interpretability import ReportConfig, SaliencyConfig, interpretability_report, saliency_maps
from assets.resources import ScanLensProject


def test_group_and_job() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("saliency_maps", "interpretability_report"):
        assert graph.get(dg.AssetKey(name)).group_name == "interpretability"
    keys = {k.to_user_string() for k in defs.resolve_job_def("train_and_evaluate").asset_layer.executable_asset_keys}
    assert {"scan_catalog", "cv_evaluation", "saliency_maps", "interpretability_report"} <= keys


#: Cheap, and not the reported work folder's settings (every method, conftest.explain_and_report), so
#: the maps are computed again: two methods, one case per kind.
CHEAP = SaliencyConfig(ig_steps=8, sanity_cases=1, per_kind=1, occlusion_window=8, occlusion_stride=8,
                       methods=["integrated_gradients", "gradcam"])


def test_saliency_and_report_materialise_with_metadata(reported_workdir: tuple[Path, dict], tmp_path: Path) -> None:
    source, _ = reported_workdir
    workdir = tmp_path / "w"
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns("checkpoint.pt"))
    result = dg.materialize(
        [saliency_maps, interpretability_report],
        resources={"project": ScanLensProject(workdir=str(workdir))},
        run_config=dg.RunConfig(ops={"saliency_maps": CHEAP,
                                     "interpretability_report": ReportConfig(audience="the test board")}),
    )
    assert result.success
    sal = {k: v.value for k, v in result.asset_materializations_for_node("saliency_maps")[0].metadata.items()}
    assert sal["cases"] >= 2 and "| integrated_gradients |" in sal["sanity"] and "data:image/png;base64," in sal["sanity"]
    assert sal["recomputed"] and "| gradcam |" in sal["sanity"] and "| occlusion |" not in sal["sanity"]  # CHEAP's
    rep = {k: v.value for k, v in result.asset_materializations_for_node("interpretability_report")[0].metadata.items()}
    assert rep["pages"] >= 8 and Path(rep["pdf"]).exists() and rep["sections"][-1] == "10 CLAIM 2024 checklist"
