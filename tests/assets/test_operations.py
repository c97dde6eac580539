"""Registry assets, the gate as a blocking check, and the retraining schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg

from assets.definitions import defs
from assets.operations import GateConfig, champion_model, model_version
from assets.resources import ScanLensProject
from pipeline.layout import Workdir
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


def _materialise(workdir: Path, instance: dg.DagsterInstance | None = None,
                 require_beats_baseline: bool = False) -> dg.ExecuteInProcessResult:
    """Run the gate and the promotion. The tiny work folder's 1-epoch models do not beat their pixel
    baseline, so the tests of other gate behaviour switch that requirement off; the last test keeps it."""
    config = GateConfig(n_resamples=200, require_beats_baseline=require_beats_baseline)
    return dg.materialize([model_version, champion_model], resources={"project": ScanLensProject(workdir=str(workdir))},
                          run_config=dg.RunConfig(ops={"model_version": config}), instance=instance,
                          raise_on_error=False)


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
    assert not Workdir(workdir).version(registry.champion()).report.exists()  # no report materialisation recorded
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


def test_the_version_keeps_the_report_the_report_asset_recorded(reported_workdir: tuple[Path, dict],
                                                                tmp_path: Path) -> None:
    """Not the newest PDF by file time: the one the latest interpretability_report materialisation named."""
    workdir = _copy(reported_workdir[0], tmp_path / "w", sanity_passed=True)
    wd = Workdir(workdir)
    (recorded,) = wd.reports.glob("*.pdf")
    wd.report("ffffffffffff").write_bytes(b"%PDF-1.4 written later, never recorded")
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="interpretability_report", metadata={"pdf": dg.MetadataValue.path(str(recorded))}))
    assert _materialise(workdir, instance).success
    (entry,) = Registry(workdir).versions()
    assert wd.version(entry.version).report.read_bytes() == recorded.read_bytes()


def test_a_challenger_below_its_pixel_baseline_is_refused_and_never_promoted(reported_workdir: tuple[Path, dict],
                                                                          tmp_path: Path) -> None:
    """The tiny evaluation (one epoch on 24 images at 32 px) against a logistic regression on its pixels."""
    workdir = _copy(reported_workdir[0], tmp_path / "w", sanity_passed=True)
    baseline = json.loads(Workdir(workdir).metrics.read_text())["baseline"]
    assert not baseline["beats_baseline"], "the tiny 1-epoch models now beat their pixel baseline: pick another case"
    result = _materialise(workdir, require_beats_baseline=True)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.description.startswith("does not beat the pixel baseline: OOF AUROC")
    assert not result.asset_materializations_for_node("champion_model")
    registry = Registry(workdir)
    (entry,) = registry.versions()
    assert registry.champion() is None and entry.status == "rejected" and entry.reason == check.description
