"""``pacs_sensor`` against a real Orthanc: each new matching study retrieved and requested once, under the
keys ``scan_scores`` resolves, with no identifier in the cursor, the run requests or the log."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pydicom
import pytest

import assets.pacs_sensor
from assets.definitions import defs
from assets.pacs import PacsConnection
from assets.pacs_sensor import pacs_sensor
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import INBOX_STUDIES, ScoringInbox, scan_scores
from pipeline.deid import Pseudonymizer
from pipeline.pacs.dicomweb import FetchResult, StudyFetch, archive_client
from pipeline.settings.pacs import PacsAuthSettings
from tests.conftest import make_inbox
from tests.dicom_factory import write_series, z_positions
from tests.orthanc import Orthanc

NAMES = Pseudonymizer(b"test-secret")  # tests/conftest.py sets SCANLENS_SECRET=test-secret


@dataclass
class Tick:
    run_requests: list[dg.RunRequest]
    skip_message: str | None
    cursor: str | None


def _tick(
    instance: dg.DagsterInstance, resources: dict[str, object], cursor: str | None, log: logging.Handler | None = None
) -> Tick:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    if log is not None:  # the sensor's log (a logger of its own, not under the root logger)
        context.log.addHandler(log)
    result = pacs_sensor(context)
    if isinstance(result, dg.SkipReason):
        return Tick([], result.skip_message, context.cursor)
    skip = result.skip_reason.skip_message if result.skip_reason else None
    requests = list(result.run_requests or [])
    if requests:  # as the daemon does before it launches the runs
        assert [r.partition_key for r in requests] == result.dynamic_partitions_requests[0].partition_keys
        instance.add_dynamic_partitions(INBOX_STUDIES.name, [r.partition_key for r in requests])
    return Tick(requests, skip, result.cursor)


def _archive_with_studies(orthanc: Orthanc, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Three BreastMNIST (US) studies dated today, from folders named ``<MRN>_<accession>``, and a CT study;
    returns the US study UIDs and the strings that identify someone."""
    today = date.today().strftime("%Y%m%d")
    us_uids, phi = [], []
    for study in sorted(make_inbox(tmp_path / "export", per_split=1).iterdir()):
        phi.append(study.name)
        for path in sorted(p for p in study.rglob("*") if p.is_file()):
            ds = pydicom.dcmread(path)
            ds.StudyDate = today
            ds.save_as(path)
            phi += [str(ds.PatientID), str(ds.PatientName), str(ds.AccessionNumber), ds.StudyInstanceUID]
            us_uids.append(ds.StudyInstanceUID)
            orthanc.upload([path])
    ct = write_series(tmp_path / "ct", z_positions(2), mutate=lambda ds, k: setattr(ds, "StudyDate", today))
    orthanc.upload(ct)
    phi.append(pydicom.dcmread(ct[0]).StudyInstanceUID)
    return sorted(set(us_uids)), phi


def _resources(workdir: Path, tmp_path: Path, **pacs: Any) -> dict[str, object]:
    return {
        "project": ScanLensProject(workdir=str(workdir)),
        "secret": PseudonymSecret(),
        "inbox": ScoringInbox(
            inbox=str(tmp_path / "inbox"), outbox=str(tmp_path / "outbox"), pacs_intake=str(tmp_path / "intake")
        ),
        "pacs": PacsConnection(**pacs),
    }


def test_the_sensor_is_registered_stopped_and_skips_without_an_archive_or_a_champion(tmp_path: Path) -> None:
    sensor = defs.resolve_sensor_def("pacs_sensor")
    assert sensor.job_name == "score_new_scans" and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 60
    with dg.instance_for_test() as instance:
        assert "no DICOMweb archive configured" in _tick(instance, _resources(tmp_path, tmp_path), None).skip_message
        unused = "http://127.0.0.1:9/dicom-web"
        tick = _tick(instance, _resources(tmp_path / "w", tmp_path, dicomweb_url=unused), None)
        assert "no champion" in tick.skip_message


def test_each_new_study_is_requested_once_and_scored(
    orthanc: Orthanc,
    champion_workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    us_uids, phi = _archive_with_studies(orthanc, tmp_path)
    resources = _resources(
        workdir,
        tmp_path,
        dicomweb_url=orthanc.dicomweb_url,
        stow_url=orthanc.dicomweb_url,  # where scan_scores sends its SR and Secondary Capture (STOW-RS)
        watch_modality="us",
        watch_max_studies=2,
    )
    real_fetch, calls = assets.pacs_sensor.fetch_studies, []

    def first_retrieval_fails(client: Any, drop: Any, names: Any, uids: list[str], **kwargs: Any) -> Any:
        calls.append(uids)
        if len(calls) == 1:  # the archive answers 503 for the first study the sensor retrieves
            failed = StudyFetch(names.study(uids[0]), found=1, failed=Counter({"HTTP 503": 1}))
            return FetchResult([failed])
        return real_fetch(client, drop, names, uids, **kwargs)

    monkeypatch.setattr(assets.pacs_sensor, "fetch_studies", first_retrieval_fails)
    expected = {NAMES.inbox(NAMES.study(uid)): uid for uid in us_uids}
    with dg.instance_for_test() as instance, caplog.at_level(logging.DEBUG):
        ticks = [_tick(instance, resources, None, caplog.handler)]
        for _ in range(3):
            ticks.append(_tick(instance, resources, ticks[-1].cursor, caplog.handler))
        keys = [r.partition_key for tick in ticks for r in tick.run_requests]
        assert [len(t.run_requests) for t in ticks] == [1, 2, 0, 0]  # the failed one came back once
        assert [len(c) for c in calls] == [1, 1, 1, 1] and calls[0] == calls[3]  # retried after the fresh one
        assert sorted(keys) == sorted(expected)  # each US study once, the CT study never
        assert len({r.run_key for t in ticks for r in t.run_requests}) == 3
        project, inbox = resources["project"], resources["inbox"]
        assert isinstance(project, ScanLensProject) and isinstance(inbox, ScoringInbox)
        for key, uid in expected.items():
            assert inbox.study_folder(project, key, NAMES) == tmp_path / "intake" / NAMES.study(uid)
            assert len(list((tmp_path / "intake" / NAMES.study(uid)).glob("ins_*.dcm"))) == 1
        shown = (
            json.dumps(
                [[t.cursor, t.skip_message, [(r.run_key, r.partition_key) for r in t.run_requests]] for t in ticks]
            )
            + caplog.text
        )
        assert "HTTP 503" in caplog.text and ticks[-1].skip_message.startswith("no new study retrieved")
        for secret in phi:
            assert secret not in shown, secret

        key = keys[0]
        scored = dg.materialize([scan_scores], partition_key=key, instance=instance, resources=resources)
        assert scored.success
        meta = {k: v.value for k, v in scored.asset_materializations_for_node("scan_scores")[0].metadata.items()}
        assert meta["scored"] == 1 and meta["dicom_objects"] == 2
        assert meta["sent_to_pacs"]["sent"] == 2 and meta["sent_to_pacs"]["failed"] == 0
        assert not _tick(instance, resources, ticks[-1].cursor).run_requests  # its new SR requests nothing
    # STOW-RS: the SR is filed into the source study, visible through QIDO-RS
    client = archive_client(orthanc.dicomweb_url, PacsAuthSettings())
    found = client.search_for_instances(study_instance_uid=expected[key], search_filters={"Modality": "SR"})
    assert len(found) == 1
