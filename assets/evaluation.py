"""Group ``evaluation``: patient-grouped folds, one model per fold (a partition each), pooled statistics.

``fold_models`` has one static partition per fold (``fold_0`` ... ``fold_{K-1}``; K is
``$SCANLENS_CV_FOLDS``, default 5, read when the code location loads). A backfill launches one run
per fold, so folds train in parallel where the ``gpu`` pool allows; ``train_and_evaluate`` runs them
all in one run through a partition range.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import os
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import IO_RETRY, OWNER, markdown_image, user_errors_are_final
from assets.config import config_class, settings_from
from assets.deployment import EVALUATE, cpu_step_tags, gpu_step_tags
from assets.ingest import scan_catalog
from assets.launcher import TrainingLauncher
from assets.resources import ScanLensProject
from assets.training import TrainedModelConfig, training_request
from pipeline.evaluate import CVSettings, EvaluationSettings, evaluate_cv, load_folds, make_folds
from pipeline.evaluate.splits import check_folds
from pipeline.layout import Workdir
from pipeline.settings import MODEL_KINDS, dims_of, kind_of

N_FOLDS = int(os.environ.get("SCANLENS_CV_FOLDS", "5"))
FOLDS = dg.StaticPartitionsDefinition([f"fold_{k}" for k in range(N_FOLDS)])


def fold_of(partition_key: str) -> int:
    """The fold number of a ``fold_<k>`` partition key."""
    return int(partition_key.removeprefix("fold_"))


if TYPE_CHECKING:  # the classes are made at import time; to a type checker they are Dagster configs
    CVEvaluationConfig: TypeAlias = dg.Config

    class CVFoldsConfig(dg.Config):
        model_kind: str
else:
    CVFoldsConfig = config_class(
        "CVFoldsConfig",
        CVSettings,
        doc="Patient-grouped folds; K is the number of fold_models partitions.",
        extra={
            "model_kind": (
                Literal[MODEL_KINDS],
                Field(
                    default=MODEL_KINDS[0], description="2d or 3d: which scans take part (those the model kind reads)"
                ),
            )
        },
    )
    CVEvaluationConfig = config_class(
        "CVEvaluationConfig", EvaluationSettings, doc="Pooled statistics over the fold models' predictions."
    )


def _fold_checks(frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    problems = check_folds(frame)
    leaks = [str(p) for p in problems if p.severity == "error"]
    missing = [str(p) for p in problems if p.severity == "warning"]
    return [
        dg.AssetCheckResult(
            check_name="no_patient_in_two_partitions",
            passed=not leaks,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(leaks) or "every patient is in exactly one partition",
        ),
        dg.AssetCheckResult(
            check_name="every_class_in_every_fold",
            passed=not missing,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(missing) or "every validation fold holds every class",
            metadata={
                "note": "a warning, not a failure: with few patients of a class it can be "
                "impossible; those folds' AUROC is undefined"
            },
        ),
    ]


@dg.asset(
    group_name="evaluation",
    owners=[OWNER],
    kinds={"scikitlearn", "parquet"},
    deps=[scan_catalog],
    retry_policy=IO_RETRY,
    op_tags=cpu_step_tags(EVALUATE),
    check_specs=[
        dg.AssetCheckSpec(
            "no_patient_in_two_partitions",
            asset="cv_folds",
            blocking=True,
            description="no patient appears in two folds, or in a fold and the test set",
        ),
        dg.AssetCheckSpec(
            "every_class_in_every_fold",
            asset="cv_folds",
            blocking=True,
            description="every class is present in every validation fold (warns where impossible)",
        ),
    ],
)
def cv_folds(config: CVFoldsConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Patient-grouped held-out test set (the catalogue's ``test`` split, else a seeded fraction), then
    ``StratifiedGroupKFold`` by pseudonymous patient over the rest: ``W/evaluation/folds.parquet``."""
    with user_errors_are_final():
        settings = settings_from(config, CVSettings, n_folds=N_FOLDS, dims=dims_of(config.model_kind))
        folds = make_folds(project.workdir_path, settings)
    counts = folds.frame.groupby(["fold", "label"]).size().unstack(fill_value=0)
    table = "| partition | " + " | ".join(f"class {c}" for c in counts.columns) + " | patients |\n"
    table += "|---" * (len(counts.columns) + 2) + "|\n"
    for fold, row in counts.iterrows():
        patients = folds.frame.loc[folds.frame["fold"] == fold, "patient_id"].nunique()
        table += (
            f"| {'test' if fold == -1 else f'fold {fold}'} | " + " | ".join(str(v) for v in row) + f" | {patients} |\n"
        )
    return dg.MaterializeResult(
        metadata={
            "scans": len(folds.frame),
            "patients": int(folds.frame["patient_id"].nunique()),
            "folds": N_FOLDS,
            "test_set": folds.test_source,
            "folds_hash": folds.folds_hash[:16],
            "counts": dg.MetadataValue.md(table),
            "table": dg.MetadataValue.path(str(Workdir(project.workdir_path).folds_table)),
        },
        check_results=_fold_checks(folds.frame),
    )


@dg.asset(
    group_name="evaluation",
    owners=[OWNER],
    kinds={"pytorch", "monai"},
    deps=[cv_folds],
    partitions_def=FOLDS,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="gpu",
    tags={"resource": "gpu"},
    op_tags=gpu_step_tags(),
)
def fold_models(
    context: dg.AssetExecutionContext, config: TrainedModelConfig, project: ScanLensProject, launcher: TrainingLauncher
) -> dg.MaterializeResult:
    """One ResNet-50 per fold, trained by the step-2 trainer on the other folds (resumable), with its
    out-of-fold and held-out test predictions. The model kind (2D/3D) is the one ``cv_folds`` chose.
    Each fold trains where the ``launcher`` resource says (by default one child process per fold, one
    after the other)."""
    with user_errors_are_final():
        kind = kind_of(load_folds(project.workdir_path).settings.dims)
        request = training_request(config, project, kind)
        rows = [launcher.train_fold(context, request, fold_of(key)) for key in context.partition_keys]
    return dg.MaterializeResult(
        metadata={
            "folds": dg.MetadataValue.json(rows),
            "model_ids": ", ".join(row["model_id"] for row in rows),
        }
    )


def _ci(block: dict[str, Any], name: str) -> str:
    ci = block.get(f"{name}_ci")
    value = block.get(name)
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


@dg.asset(
    group_name="evaluation",
    owners=[OWNER],
    kinds={"scikitlearn", "matplotlib"},
    deps=[fold_models],
    retry_policy=IO_RETRY,
    op_tags=cpu_step_tags(EVALUATE),
)
def cv_evaluation(config: CVEvaluationConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Pooled out-of-fold and held-out test statistics with patient-level bootstrap CIs, DeLong
    cross-check, the operating point pre-specified on OOF predictions, calibration, subgroups and plots."""
    with user_errors_are_final():
        result = evaluate_cv(project.workdir_path, settings_from(config, EvaluationSettings))
    m = result.metrics
    names = [
        "auroc",
        "auprc",
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "brier",
    ]
    rows = [n for n in names if n in m["oof"]]
    table = "| metric (95% CI) | out-of-fold | test |\n| --- | --- | --- |\n" + "\n".join(
        f"| {n} | {_ci(m['oof'], n)} | {_ci(m['test'], n) if m['test'] else 'no test set'} |" for n in rows
    )
    plots = "\n\n".join(markdown_image(path) for path in result.plots.values())
    metadata = {
        "oof_auroc": m["oof"]["auroc"],
        "oof_auroc_ci": str(m["oof"]["auroc_ci"]),
        "test_auroc": m["test"]["auroc"] if m["test"] else None,
        "test_auroc_ci": str(m["test"]["auroc_ci"]) if m["test"] else "no test set",
        "operating_point": dg.MetadataValue.json(m["operating_point"]),
        "metrics": dg.MetadataValue.md(table + "\n\nOperating point: " + m["operating_point"]["statement"] + "."),
        "plots": dg.MetadataValue.md(plots),
        "per_fold": dg.MetadataValue.json(
            [{"fold": f["fold"], "auroc": f["auroc"], "auroc_ci": f["auroc_ci"]} for f in m["folds"]]
        ),
        "subgroups": dg.MetadataValue.json(m["subgroups"]),
        "metrics_json": dg.MetadataValue.path(str(Workdir(project.workdir_path).metrics)),
    }
    if "ece" in m["oof"]:
        metadata["oof_ece"] = m["oof"]["ece"]
        metadata["oof_brier"] = m["oof"]["brier"]
    baseline = m.get("baseline") or {}
    metadata["pixel_baseline"] = baseline.get("statement") or baseline.get("note") or "not computed"
    return dg.MaterializeResult(metadata=metadata)
