"""Scenario: canary-laden studies (and folder names carrying MRNs and accession numbers) arrive in
the inbox; the sensor requests them and ``scan_scores`` scores them. No identifier appears in the
scores table, any file under W, the logs, the sensor's cursor and run keys, or Dagster's event log
and metadata. The DICOM outputs carry the source study reference by design, and only they do."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest

from assets.pacs import PacsConnection
from assets.resources import PseudonymSecret, ScanLensProject
from assets.scoring import INBOX_STUDIES, ScoringInbox, inbox_sensor, scan_scores
from tests.conftest import make_inbox
from tests.phi_canaries import find_canaries, plant_into_existing


def test_no_identifier_leaves_scoring_except_in_the_dicom_outputs(
    champion_workdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    inbox = make_inbox(tmp_path, per_split=1, seed=11)
    folder_names = [p.name for p in inbox.iterdir()]  # "<MRN>_<accession>": identifiers themselves
    canaries = plant_into_existing(inbox) + folder_names
    assert set().union(*find_canaries(inbox, canaries).values()) >= set(canaries) - set(folder_names)
    outbox = tmp_path / "outbox"
    resources = {"project": ScanLensProject(workdir=str(workdir)), "secret": PseudonymSecret(),
                 "inbox": ScoringInbox(inbox=str(inbox), outbox=str(outbox), stable_seconds=0), "pacs": PacsConnection()}
    with caplog.at_level(logging.DEBUG), dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        tick = inbox_sensor(context)
        keys = [r.partition_key for r in tick.run_requests]
        assert len(keys) == 3
        instance.add_dynamic_partitions(INBOX_STUDIES.name, keys)
        results = [dg.materialize([scan_scores], partition_key=key, instance=instance, resources=resources)
                   for key in keys]
        assert all(r.success for r in results)
        events = [repr(entry) for r in results for entry in instance.all_logs(r.run_id)]
        metadata = [repr(e.metadata) for r in results for e in r.asset_materializations_for_node("scan_scores")]
    table = pd.read_parquet(workdir / "scoring" / "scores.parquet")
    assert len(table) == 3
    extra = {"log": caplog.text, "events": "\n".join(events), "metadata": "\n".join(metadata),
             "sensor": repr([tick.cursor, [(r.run_key, r.partition_key, r.tags) for r in tick.run_requests]]),
             "file_names": "\n".join(str(p.relative_to(workdir)) for p in workdir.rglob("*")),
             "outbox_names": "\n".join(p.name for p in outbox.iterdir())}
    assert "scored" in extra["metadata"] and "inbox_" in extra["events"]  # the searched texts are real
    # the intake manifests map source files (named by the demo's random numbers) to scans: the steward's link back
    manifests = tuple(str(p.relative_to(workdir)) for p in workdir.glob("scoring/intake/*/ingest_manifest.parquet"))
    assert find_canaries(workdir, canaries, extra, skip=manifests) == {}
    # the DICOM outputs are filed into the source studies: their original UIDs return there, by design
    studies = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in inbox.rglob("*.dcm")}
    assert {pydicom.dcmread(p).StudyInstanceUID for p in outbox.glob("*_sr.dcm")} == studies
    assert {pydicom.dcmread(p).StudyInstanceUID for p in outbox.glob("*_sc.dcm")} == studies
    assert studies <= set(canaries) and len(list(outbox.iterdir())) == 6
