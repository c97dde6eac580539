"""Dagster assets of the ingest group, materialised in-process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import defs
from assets.ingest import (
    DemoStudiesConfig,
    ScanCatalogConfig,
    demo_studies,
    scan_catalog,
)
from assets.resources import PseudonymSecret, ScanLensProject
from tests.phi_canaries import plant_canaries


def _project(tmp_path: Path) -> ScanLensProject:
    return ScanLensProject(workdir=str(tmp_path / "w"), demo_root=str(tmp_path / "demo"))


def _materialize(tmp_path: Path, catalog_config: ScanCatalogConfig, with_demo: bool = True) -> dg.ExecuteInProcessResult:
    assets = [demo_studies, scan_catalog] if with_demo else [scan_catalog]
    ops = {"scan_catalog": catalog_config}
    if with_demo:
        ops["demo_studies"] = DemoStudiesConfig(breast_limit=4, adrenal_limit=2)
    return dg.materialize(
        assets,
        resources={"project": _project(tmp_path), "secret": PseudonymSecret(secret="asset-test")},
        run_config=dg.RunConfig(ops=ops),
        raise_on_error=False,
    )


def test_definitions_load_with_the_ingest_group() -> None:
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= {"demo_studies", "scan_catalog"}
    assert graph.get(dg.AssetKey("scan_catalog")).group_name == "ingest"
    demo_job = defs.resolve_job_def("scanlens_demo")
    assert {node.name for node in demo_job.graph.node_defs} == {"demo_studies", "scan_catalog", "preprocessed_scans",
                                                                  "trained_model"}


def test_demo_then_catalog_materialise_with_metadata_and_a_passing_check(tmp_path: Path) -> None:
    config = ScanCatalogConfig(source=str(tmp_path / "demo" / "source"), labels=str(tmp_path / "demo" / "labels.csv"))
    result = _materialize(tmp_path, config)
    assert result.success
    [materialization] = [m for m in result.asset_materializations_for_node("scan_catalog")]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["scans"] == 4 * 3 + 2 * 3 and metadata["quarantined_files"] == 0
    assert metadata["modalities"] == {"CT": 6, "US": 12}
    assert metadata["label_counts"]["train"] == {"0": 3, "1": 3}
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "labelled_scans_present"
    again = _materialize(tmp_path, config)  # re-materialising unchanged input reads and writes nothing
    metadata = {k: v.value for k, v in again.asset_materializations_for_node("scan_catalog")[0].metadata.items()}
    assert (metadata["files_read"], metadata["volumes_written"]) == (0, 0)


def test_unlabelled_catalogue_fails_the_blocking_check(tmp_path: Path) -> None:
    plant_canaries(tmp_path / "src" / "s")
    result = _materialize(tmp_path, ScanCatalogConfig(source=str(tmp_path / "src"), labels=""), with_demo=False)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "no usable scan has a label" in check.description


def test_no_phi_reaches_dagster_events(tmp_path: Path) -> None:
    canaries = plant_canaries(tmp_path / "src" / "s")
    result = _materialize(tmp_path, ScanCatalogConfig(source=str(tmp_path / "src"), labels=""), with_demo=False)
    events = "\n".join(repr(event) for event in result.all_events)
    assert "scans" in events
    assert [c for c in canaries if c in events] == []


def test_launchpad_defaults_are_read_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ScanCatalogConfig()
    assert config.source == "" and config.labels == ""  # the demo studies, found through the project resource
    assert "workdir" not in ScanCatalogConfig.model_fields  # the work folder comes from the resource only
    project = ScanLensProject()
    monkeypatch.setenv("SCANLENS_DEMO_ROOT", str(tmp_path / "demo"))
    monkeypatch.delenv("SCANLENS_WORKDIR", raising=False)
    assert project.demo_source == tmp_path / "demo" / "source"  # set after the resource was made: still followed
    assert project.workdir_path == tmp_path / "demo" / "workdir"
    monkeypatch.setenv("SCANLENS_WORKDIR", str(tmp_path / "w"))
    assert project.workdir_path == tmp_path / "w"


def test_a_missing_source_fails_the_step_once_with_the_message(tmp_path: Path) -> None:
    result = _materialize(tmp_path, ScanCatalogConfig(source=str(tmp_path / "nowhere"), labels=""), with_demo=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(failures) == 1 and retries == []
    assert "source folder does not exist" in failures[0].event_specific_data.error.message


def test_a_busy_work_folder_fails_the_step_once_naming_the_holder(tmp_path: Path) -> None:
    from tests.pipeline.test_locking import held_elsewhere

    plant_canaries(tmp_path / "src" / "s")
    with held_elsewhere(tmp_path / "w") as holder:
        result = dg.materialize(
            [scan_catalog],
            resources={"project": ScanLensProject(workdir=str(tmp_path / "w"), lock_timeout_s=0.5),
                       "secret": PseudonymSecret(secret="asset-test")},
            run_config=dg.RunConfig(ops={"scan_catalog": ScanCatalogConfig(source=str(tmp_path / "src"), labels="")}),
            raise_on_error=False,
        )
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not result.success and len(failures) == 1 and retries == []
    message = failures[0].event_specific_data.error.message
    assert f"is in use by PID {holder.pid} (holder-for-test" in message and "waited 0.5 s" in message
