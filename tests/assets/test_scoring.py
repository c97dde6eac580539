"""The scoring group: the inbox sensor, the ``scan_scores`` partitions and the ``score_new_scans`` job."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import assets.scoring
from assets.definitions import defs
from assets.pacs import PacsConnection
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import INBOX_STUDIES, ScoringInbox, inbox_sensor, scan_scores
from pipeline.deid import Pseudonymizer
from pipeline.layout import Workdir
from pipeline.registry import Registry
from tests.conftest import make_inbox


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _resources(workdir: Path, inbox: Path, stable: float = 60) -> dict[str, object]:
    return {"project": ScanLensProject(workdir=str(workdir)), "secret": PseudonymSecret(),
            "inbox": ScoringInbox(inbox=str(inbox), outbox=str(inbox.parent / "outbox"), stable_seconds=stable),
            "pacs": PacsConnection()}


@dataclass
class Tick:
    run_requests: list[dg.RunRequest]
    skip_message: str | None
    cursor: str | None
    dynamic_partitions_requests: list[dg.AddDynamicPartitionsRequest]


def _tick(instance: dg.DagsterInstance, resources: dict[str, object], cursor: str | None) -> Tick:
    """One sensor evaluation (called directly: the daemon adds the partitions before it launches runs)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = inbox_sensor(context)
    if isinstance(result, dg.SkipReason):
        return Tick([], result.skip_message, context.cursor, [])
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return Tick(list(result.run_requests or []), skip, result.cursor, list(result.dynamic_partitions_requests or []))


def test_scoring_group_job_and_sensor_definitions() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("scan_scores")).group_name == "scoring"
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == {
        "ingest", "preprocess", "training", "evaluation", "interpretability", "scoring"}
    job = defs.resolve_job_def("score_new_scans")
    assert [k.to_user_string() for k in job.asset_layer.executable_asset_keys] == ["scan_scores"]
    sensor = defs.resolve_sensor_def("inbox_sensor")
    assert sensor.job_name == "score_new_scans" and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert scan_scores.partitions_def == INBOX_STUDIES
    for key in graph.get_all_asset_keys():  # what the UI shows for every asset
        node = graph.get(key)
        assert node.description and node.owners == ["team:scanlens"] and node.kinds, key


def test_sensor_requests_each_complete_study_once_and_lets_one_being_written_wait(
    champion_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = make_inbox(tmp_path, per_split=1)
    resources = _resources(champion_workdir, inbox)
    clock = Clock(1_000.0)
    monkeypatch.setattr(assets.scoring.time, "time", clock)
    with dg.instance_for_test() as instance:
        first = _tick(instance, resources, None)
        assert not first.run_requests and "3 still being written" in first.skip_message
        writing = sorted(inbox.iterdir())[0]
        clock.now += 45
        (writing / "late_slice.dcm").write_bytes(b"still arriving")
        second = _tick(instance, resources, first.cursor)
        assert not second.run_requests
        clock.now += 20  # 65 s after the first sight: two studies stable, the third changed 20 s ago
        third = _tick(instance, resources, second.cursor)
        keys = sorted(r.partition_key for r in third.run_requests)
        assert len(keys) == 2 and all(k.startswith("inbox_") for k in keys)
        assert "MRN" not in json.dumps([third.cursor, [r.run_key for r in third.run_requests]])
        assert sorted(third.dynamic_partitions_requests[0].partition_keys) == keys
        clock.now += 10
        assert not _tick(instance, resources, third.cursor).run_requests  # never twice
        clock.now += 60
        fourth = _tick(instance, resources, third.cursor)
        assert len(fourth.run_requests) == 1 and fourth.run_requests[0].partition_key not in keys
        clock.now += 3600
        assert not _tick(instance, resources, fourth.cursor).run_requests


def test_sensor_waits_without_a_champion(tiny_workdir: Path, tmp_path: Path) -> None:
    inbox = make_inbox(tmp_path, per_split=1)
    with dg.instance_for_test() as instance:
        tick = _tick(instance, _resources(tiny_workdir, inbox, stable=0), None)
    assert not tick.run_requests and "no champion" in tick.skip_message


def _score(instance: dg.DagsterInstance, resources: dict[str, object], key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([scan_scores], partition_key=key, instance=instance, resources=resources)


def test_scan_scores_is_idempotent_and_rescores_after_a_promotion(champion_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    inbox = make_inbox(tmp_path, per_split=1)
    study = sorted(inbox.iterdir())[0]
    (study / "unreadable.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)  # broken after the preamble
    resources = _resources(workdir, inbox, stable=0)
    with dg.instance_for_test() as instance:
        tick = _tick(instance, resources, None)
        instance.add_dynamic_partitions(INBOX_STUDIES.name, [r.partition_key for r in tick.run_requests])
        key = Pseudonymizer(b"test-secret").inbox(study.name)  # conftest sets SCANLENS_SECRET=test-secret
        assert key in [r.partition_key for r in tick.run_requests]
        first = _score(instance, resources, key)
        assert first.success
        meta = {k: v.value for k, v in first.asset_materializations_for_node("scan_scores")[0].metadata.items()}
        assert meta["scored"] == 1 and meta["dicom_objects"] == 2
        assert sum(meta["quarantined_by_reason"].values()) == 1  # the run went on past the unreadable file
        again = _score(instance, resources, key)
        meta = {k: v.value for k, v in again.asset_materializations_for_node("scan_scores")[0].metadata.items()}
        assert meta["scored"] == 0 and meta["already_scored"] == 1 and meta["dicom_objects"] == 0
        registry = Registry(workdir)
        old = registry.champion()
        new = "v-challenger0001"
        shutil.copytree(Workdir(workdir).version(old).root, Workdir(workdir).version(new).root)
        record = json.loads(Workdir(workdir).version(new).record.read_text())
        Workdir(workdir).version(new).record.write_text(json.dumps({**record, "version": new}))
        registry.promote(new, "test promotion")
        third = _score(instance, resources, key)
        meta = {k: v.value for k, v in third.asset_materializations_for_node("scan_scores")[0].metadata.items()}
        assert meta["scored"] == 1 and meta["model_version"] == new
    table = pd.read_parquet(workdir / "scoring" / "scores.parquet")
    assert sorted(table["model_version"]) == sorted([old, new]) and table["scan_id"].nunique() == 1


def test_scan_scores_fails_clearly_for_a_study_that_left_the_inbox(champion_workdir: Path, tmp_path: Path) -> None:
    inbox = make_inbox(tmp_path, per_split=1)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(INBOX_STUDIES.name, ["inbox_0000000000000000"])
        result = dg.materialize([scan_scores], partition_key="inbox_0000000000000000", instance=instance,
                                resources=_resources(champion_workdir, inbox, stable=0), raise_on_error=False)
        assert not result.success
        failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
        assert "moved or removed" in failure.description
