"""Model versions, the champion/challenger gate and the scheduled retraining.

``model_version`` registers the evaluation as a challenger in ``W/registry/`` and runs the gate as
its blocking check ``challenger_passes_gate`` (non-inferior on pooled OOF AUROC against the
champion, every saliency sanity check passed); ``champion_model`` promotes it, so a challenger that
fails never becomes champion: it stays registered as rejected, with the reason in the check's
description and in ``W/registry/history.jsonl``.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import os

import dagster as dg
from pydantic import Field

from assets.common import OWNER, user_errors_are_final
from assets.interpretability import interpretability_report
from assets.resources import ScanLensProject
from pipeline.registry import Registry
from pipeline.registry.decide import decide_challenger, promote_if_accepted

#: Cron of the retraining schedule (``$SCANLENS_RETRAIN_CRON``; default Mondays 03:00).
RETRAIN_CRON = os.environ.get("SCANLENS_RETRAIN_CRON", "0 3 * * 1")


class GateConfig(dg.Config):
    delta: float = Field(default=0.02, description="non-inferiority margin on OOF AUROC (challenger - champion)")
    n_resamples: int = Field(default=2000, description="paired patient-level bootstrap resamples")


@dg.asset(group_name="training", owners=[OWNER], kinds={"python"}, deps=[interpretability_report],
          check_specs=[dg.AssetCheckSpec("challenger_passes_gate", asset="model_version", blocking=True,
                                         description="non-inferior to the champion (paired patient bootstrap, "
                                                     "lower CI bound > -delta) and every saliency sanity check passed")])
def model_version(config: GateConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """The evaluated fold models, metrics, OOF predictions, sanity results and report, stored as a
    registry version (the challenger), with the gate's decision against the champion."""
    reports = sorted((project.workdir_path / "reports").glob("*.pdf"), key=lambda p: p.stat().st_mtime)
    with user_errors_are_final():
        entry, decision = decide_challenger(project.workdir_path, reports[-1] if reports else None, config.delta,
                                            config.n_resamples)
    return dg.MaterializeResult(
        metadata={"version": entry.version, "status": entry.status, "gate": decision.reason,
                  "gate_figures": dg.MetadataValue.json(decision.figures),
                  "oof_auroc": entry.record["oof_auroc"]},
        check_results=[dg.AssetCheckResult(check_name="challenger_passes_gate", passed=decision.passed,
                                           severity=dg.AssetCheckSeverity.ERROR, description=decision.reason,
                                           metadata={k: v for k, v in decision.figures.items() if not isinstance(v, list)})],
    )


@dg.asset(group_name="training", owners=[OWNER], kinds={"python"}, deps=[model_version])
def champion_model(project: ScanLensProject) -> dg.MaterializeResult:
    """The registry's champion after promoting the challenger that passed the gate (one atomic rename)."""
    with user_errors_are_final():
        registry = Registry(project.workdir_path)
        version = registry.register().version  # the current evaluation's version (already registered)
        entry = promote_if_accepted(project.workdir_path, version)
    return dg.MaterializeResult(metadata={"champion": registry.champion() or "none", "version": entry.version,
                                          "status": entry.status, "reason": entry.reason or ""})
