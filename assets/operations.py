"""Model versions, the champion/challenger gate and the scheduled retraining.

``model_version`` registers the evaluation as a challenger in ``W/registry/`` and runs the gate as
its blocking check ``challenger_passes_gate`` (non-inferior on pooled OOF AUROC against the
champion, above its pixel baseline's pooled OOF AUROC, every saliency sanity check passed); ``champion_model`` promotes it, so a challenger that
fails never becomes champion: it stays registered as rejected, with the reason in the check's
description and in ``W/registry/history.jsonl``. The version keeps the review-board PDF that the
latest ``interpretability_report`` materialisation recorded (its ``pdf`` metadata), never a guess by
file time.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.common import OWNER, user_errors_are_final
from assets.interpretability import interpretability_report
from assets.resources import ScanLensProject
from pipeline.layout import Workdir
from pipeline.registry import Registry
from pipeline.registry.decide import decide_challenger, promote_if_accepted
from pipeline.scoring.drift import read_drift, summary

#: Cron of the retraining schedule (``$SCANLENS_RETRAIN_CRON``; default Mondays 03:00).
RETRAIN_CRON = os.environ.get("SCANLENS_RETRAIN_CRON", "0 3 * * 1")


class GateConfig(dg.Config):
    delta: float = Field(default=0.02, description="non-inferiority margin on OOF AUROC (challenger - champion)")
    n_resamples: int = Field(default=2000, description="paired patient-level bootstrap resamples")
    require_beats_baseline: bool = Field(
        default=True,
        description="refuse a challenger whose pooled OOF AUROC is not above its pixel baseline's "
        "(metrics.json 'baseline'); switch off only to test unrelated behaviour",
    )


@dg.asset(
    group_name="training",
    owners=[OWNER],
    kinds={"python"},
    deps=[interpretability_report],
    check_specs=[
        dg.AssetCheckSpec(
            "challenger_passes_gate",
            asset="model_version",
            blocking=True,
            description="non-inferior to the champion (paired patient bootstrap, "
            "lower CI bound > -delta), beats its pixel baseline on OOF AUROC, and every saliency sanity check passed",
        )
    ],
)
def model_version(
    context: dg.AssetExecutionContext, config: GateConfig, project: ScanLensProject
) -> dg.MaterializeResult:
    """The evaluated fold models, metrics, OOF predictions, sanity results and report, stored as a
    registry version (the challenger), with the gate's decision against the champion."""
    report = recorded_report(context, project)
    with user_errors_are_final():
        entry, decision = decide_challenger(
            project.workdir_path,
            report,
            config.delta,
            config.n_resamples,
            require_beats_baseline=config.require_beats_baseline,
        )
    return dg.MaterializeResult(
        metadata={
            "version": entry.version,
            "status": entry.status,
            "gate": decision.reason,
            "gate_figures": dg.MetadataValue.json(decision.figures),
            "oof_auroc": entry.record["oof_auroc"],
            "champion_score_drift": drift_at_retraining(context, project),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="challenger_passes_gate",
                passed=decision.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=decision.reason,
                metadata={k: v for k, v in decision.figures.items() if not isinstance(v, list)},
            )
        ],
    )


def drift_at_retraining(context: dg.AssetExecutionContext, project: ScanLensProject) -> str:
    """The score drift of the champion this challenger would replace (``W/scoring/drift.json``, which
    ``score_drift`` refreshes early in the same run), as one line, also logged: why retraining is due."""
    record = read_drift(project.workdir_path)
    line = summary(record) if record is not None else "no score drift record (score_drift not materialised)"
    context.log.info(line)
    return line


def recorded_report(context: dg.AssetExecutionContext, project: ScanLensProject) -> Path | None:
    """The PDF the latest ``interpretability_report`` materialisation recorded as ``pdf``, when it is
    still there and belongs to this work folder; otherwise None, with a log line saying why."""
    event = context.instance.get_latest_materialization_event(interpretability_report.key)
    materialization = event.asset_materialization if event is not None else None
    recorded = materialization.metadata.get("pdf") if materialization is not None else None
    if recorded is None:
        context.log.info(
            "no interpretability_report materialisation records a PDF: the version is stored without a report"
        )
        return None
    path = Path(str(recorded.value))
    reports = Workdir(project.workdir_path).reports
    if path.resolve().parent != reports.resolve() or not path.is_file():
        context.log.warning(
            f"the recorded report {path} is not a file in {reports}: the version is stored without a "
            "report (materialise interpretability_report again)"
        )
        return None
    return path


@dg.asset(group_name="training", owners=[OWNER], kinds={"python"}, deps=[model_version])
def champion_model(project: ScanLensProject) -> dg.MaterializeResult:
    """The registry's champion after promoting the challenger that passed the gate (one atomic rename)."""
    with user_errors_are_final():
        registry = Registry(project.workdir_path)
        version = registry.register().version  # the current evaluation's version (already registered)
        entry = promote_if_accepted(project.workdir_path, version)
    return dg.MaterializeResult(
        metadata={
            "champion": registry.champion() or "none",
            "version": entry.version,
            "status": entry.status,
            "reason": entry.reason or "",
        }
    )
