"""Registry assets, the gate as a blocking check, and the retraining schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from assets.definitions import defs
from assets.operations import GateConfig, champion_model, model_version
from assets.resources import ScanLensProject
from pipeline.registry import Registry


def test_schedule_targets_train_and_evaluate_stopped_weekly_over_every_fold() -> None:
    schedule = defs.resolve_schedule_def("weekly_retraining")
    assert schedule.job_name == "train_and_evaluate" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 3 * * 1"
    with dg.build_schedule_context() as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == "fold_0"
    assert request.tags["dagster/asset_partition_range_end"] == "fold_4"
    keys = {k.to_user_string() for k in defs.resolve_job_def("train_and_evaluate").asset_layer.executable_asset_keys}
    assert {"scan_catalog", "interpretability_report", "model_version", "champion_model"} <= keys
    dg.Definitions.validate_loadable(defs)


def _materialise(workdir: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize([model_version, champion_model], resources={"project": ScanLensProject(workdir=str(workdir))},
                          run_config=dg.RunConfig(ops={"model_version": GateConfig(n_resamples=200)}), raise_on_error=False)


def _copy(source: Path, target: Path, sanity_passed: bool) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint.pt", "registry"))
    sanity = json.loads((target / "saliency" / "sanity.json").read_text())
    for entry in sanity["methods"].values():
        entry["passed"] = sanity_passed
    (target / "saliency" / "sanity.json").write_text(json.dumps(sanity))
    return target


def test_first_model_passing_sanity_becomes_champion(reported_workdir: tuple[Path, dict], tmp_path: Path) -> None:
    workdir = _copy(reported_workdir[0], tmp_path / "w", sanity_passed=True)
    result = _materialise(workdir)
    assert result.success
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and "no champion yet" in check.description
    registry = Registry(workdir)
    assert registry.champion() is not None and registry.entry(registry.champion()).status == "champion"
    again = _materialise(workdir)  # the same evaluation again: still the champion, nothing duplicated
    assert again.success and len(registry.versions()) == 1


def test_challenger_failing_a_sanity_check_is_rejected_with_its_reason(reported_workdir: tuple[Path, dict],
                                                                       tmp_path: Path) -> None:
    workdir = _copy(reported_workdir[0], tmp_path / "w", sanity_passed=False)
    result = _materialise(workdir)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and "sanity check failed" in check.description
    assert not result.asset_materializations_for_node("champion_model")  # blocked: never promoted
    registry = Registry(workdir)
    assert registry.champion() is None
    (entry,) = registry.versions()
    assert entry.status == "rejected" and "sanity check failed" in entry.reason
