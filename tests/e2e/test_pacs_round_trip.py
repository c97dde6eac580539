"""Scenario: a PACS (a real Orthanc) sends canary-laden studies to ``scanlens listen``; the inbox sensor
and ``scan_scores`` score them; the SR and Secondary Capture go back into each source study by C-STORE,
where a query finds the SR with the probability, the decision and the model version. A peer with an
unknown AE title is turned away. No identifier appears in the logs, Dagster's metadata, the scores table
or any name in the inbox; only the DICOM outputs carry the source study, by design."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest
import requests

from assets.pacs import PacsConnection
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import INBOX_STUDIES, ScoringInbox, inbox_sensor, scan_scores
from tests.conftest import make_inbox
from tests.orthanc import free_port, start_listener
from tests.phi_canaries import find_canaries, plant_into_existing


def _sr_content(ds: pydicom.Dataset) -> dict[str, str]:
    """The SR's content items as {concept meaning: value}, read the way a viewer would."""
    out = {}
    for item in ds.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            out[name] = str(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            out[name] = str(item.TextValue)
    return out


def test_a_pacs_sends_studies_and_finds_the_scores_in_the_same_study(
    champion_workdir: Path,
    orthanc,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    source = make_inbox(tmp_path / "modality", per_split=1, seed=23)  # 3 BreastMNIST studies, synthetic headers
    canaries = plant_into_existing(source) + [p.name for p in source.iterdir()]
    study_ids = orthanc.upload(sorted(source.rglob("*.dcm")))
    study_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in source.rglob("*.dcm")}
    assert len(study_ids) == len(study_uids) == 3

    inbox, outbox, port = tmp_path / "inbox", tmp_path / "outbox", free_port()
    listener_log = tmp_path / "listener.log"
    listener = start_listener(inbox, port, listener_log, "--allow", "ORTHANC", "--workdir", str(workdir))
    try:
        orthanc.add_modality("scanlens", "SCANLENS", port)
        with pytest.raises(requests.HTTPError):  # a peer calling as STRANGER is rejected at association
            orthanc.post(
                "/modalities/scanlens/store", {"Resources": study_ids, "Synchronous": True, "LocalAet": "STRANGER"}
            )
        assert not inbox.exists() or list(inbox.rglob("*.dcm")) == []
        orthanc.store_to("scanlens", study_ids)  # Orthanc is the SCU, as a hospital PACS would be
    finally:
        listener.terminate()
        listener.wait(timeout=30)
    assert listener.returncode == 0
    received = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file())
    assert len(received) == 3 and all(r.startswith("stu_") and "/ins_" in r for r in received)

    pacs = PacsConnection(send_to=orthanc.node, send_backoff_s=0.0)
    resources = {
        "project": ScanLensProject(workdir=str(workdir)),
        "secret": PseudonymSecret(),
        "inbox": ScoringInbox(inbox=str(inbox), outbox=str(outbox), stable_seconds=0),
        "pacs": pacs,
    }
    with caplog.at_level(logging.DEBUG), dg.instance_for_test() as instance:
        tick = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        keys = [r.partition_key for r in tick.run_requests]
        assert len(keys) == 3
        instance.add_dynamic_partitions(INBOX_STUDIES.name, keys)
        results = [
            dg.materialize([scan_scores], partition_key=key, instance=instance, resources=resources) for key in keys
        ]
        assert all(r.success for r in results)
        events = [repr(entry) for r in results for entry in instance.all_logs(r.run_id)]
        metadata = [e.metadata for r in results for e in r.asset_materializations_for_node("scan_scores")]
    assert [m["sent_to_pacs"].value["sent"] for m in metadata] == [2, 2, 2]  # type: ignore[index]

    scores = pd.read_parquet(workdir / "scoring" / "scores.parquet")
    assert len(scores) == 3
    found = {}
    for study in study_uids:  # query the PACS: the SR is in the source study, with the score
        instances = orthanc.instances_of_study(study)
        srs = [
            i
            for i in instances
            if i["MainDicomTags"].get("SOPInstanceUID")
            and pydicom.dcmread(io.BytesIO(orthanc.instance_file(i["ID"]))).Modality == "SR"
        ]
        assert len(srs) == 1, f"expected one SR in the study, found {len(srs)}"
        sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(srs[0]["ID"])))
        assert sr.StudyInstanceUID == study and len(instances) == 3  # the image, the SR and the SC
        found[study] = _sr_content(sr)
    version = scores["model_version"].iloc[0]
    by_probability = {round(float(p), 6) for p in scores["probability"]}
    for content in found.values():
        assert content["Algorithm Version"] == version
        assert round(float(content["Probability of class 1"]), 6) in by_probability
        assert content["Decision at the operating point"] in {"positive", "negative", "refer"}
    print("SR content read back from Orthanc:", *found.values(), sep="\n  ")

    texts = {
        "listener_log": listener_log.read_text(),
        "log": caplog.text,
        "events": "\n".join(events),
        "metadata": "\n".join(repr(m) for m in metadata),
        "inbox_names": "\n".join(received),
        "scores": scores.to_csv(),
    }
    assert "association from ORTHANC" in texts["listener_log"] and "STRANGER rejected" in texts["listener_log"]
    assert find_canaries(inbox, canaries, texts, skip=tuple(received)) == {}
