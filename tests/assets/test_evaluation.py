"""Dagster assets of the evaluation group, materialised in-process on a tiny work folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.definitions import defs
from assets.evaluation import FOLDS, CVEvaluationConfig, CVFoldsConfig, _fold_checks, cv_evaluation, cv_folds, fold_models
from assets.launcher import TrainingLauncher
from assets.resources import ScanLensProject
from assets.training import TrainedModelConfig
from pipeline.evaluate.evaluation import PLOTS

RANGE = {"dagster/asset_partition_range_start": FOLDS.get_partition_keys()[0],
         "dagster/asset_partition_range_end": FOLDS.get_partition_keys()[-1]}

IN_PROCESS = TrainingLauncher(mode="in_process")  # the child-process default is tested in test_launcher.py


def _materialise(workdir: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cv_folds, fold_models, cv_evaluation],
        tags=RANGE,
        resources={"project": ScanLensProject(workdir=str(workdir)), "launcher": IN_PROCESS},
        run_config=dg.RunConfig(ops={
            "cv_folds": CVFoldsConfig(),
            "fold_models": TrainedModelConfig(epochs=1, batch_size=4, weights="", augment=False),
            "cv_evaluation": CVEvaluationConfig(resamples=200),
        }),
    )


def test_evaluation_group_partitions_checks_and_job() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("cv_folds", "fold_models", "cv_evaluation"):
        assert graph.get(dg.AssetKey(name)).group_name == "evaluation"
    assert graph.get(dg.AssetKey("fold_models")).partitions_def.get_partition_keys() == [f"fold_{k}" for k in range(5)]
    specs = {spec.name: spec for spec in cv_folds.check_specs}
    assert specs["no_patient_in_two_partitions"].blocking and specs["every_class_in_every_fold"].blocking
    job = defs.resolve_job_def("train_and_evaluate")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "scan_catalog", "cv_folds", "fold_models", "cv_evaluation"}


def test_fold_checks_fail_on_a_leak_and_warn_on_a_missing_class() -> None:
    frame = pd.DataFrame({"patient_id": ["a", "a", "b", "c", "d"], "label": [0, 0, 1, 0, 1], "fold": [0, 1, 0, 1, -1]})
    leak, missing = _fold_checks(frame)
    assert not leak.passed and leak.severity == dg.AssetCheckSeverity.ERROR and "1 patient" in leak.description
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.WARN and "fold 1" in missing.description


def test_cv_runs_every_fold_in_one_run_and_reports_metrics(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir)
    result = _materialise(workdir)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_patient_in_two_partitions"].passed
    folds_meta = {k: v.value for k, v in result.asset_materializations_for_node("cv_folds")[0].metadata.items()}
    assert folds_meta["folds"] == 5 and "catalogue split 'test'" == folds_meta["test_set"]
    fold_events = result.asset_materializations_for_node("fold_models")
    assert sorted(e.partition for e in fold_events) == FOLDS.get_partition_keys()
    meta = {k: v.value for k, v in result.asset_materializations_for_node("cv_evaluation")[0].metadata.items()}
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    assert meta["oof_auroc"] == metrics["oof"]["auroc"] and meta["test_auroc"] == metrics["test"]["auroc"]
    assert "| auroc |" in meta["metrics"] and meta["plots"].count("data:image/png;base64,") == len(PLOTS)
    assert len(meta["per_fold"]) == 5
    again = _materialise(workdir)  # unchanged inputs: models and predictions are reused
    fold_meta = again.asset_materializations_for_node("fold_models")[0].metadata["folds"].value
    assert not any(f["predicted"] for f in fold_meta)
