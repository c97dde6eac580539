"""Sending scoring's SR and Secondary Capture to a real Orthanc: C-STORE and STOW-RS, retries, the
failed/ folder, and the sent ledger (nothing is sent twice)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

import pipeline.pacs.send as send_module
from pipeline.errors import UserInputError
from pipeline.layout import Outbox
from pipeline.pacs.send import Destination, send_objects, sent_uids
from pipeline.scoring.dicom_out import ScoredScan, read_source_headers, write_score_outputs
from pipeline.settings.pacs import PacsSendSettings
from tests.dicom_factory import write_series, z_positions


def _outputs(tmp_path: Path, n_scans: int) -> tuple[Path, list[Path], list[str]]:
    """SR + SC for ``n_scans`` scans of ``n_scans`` source studies; the outbox, the files and study UIDs."""
    outbox, files, studies = tmp_path / "outbox", [], []
    rgb = np.zeros((8, 8, 3), np.uint8)
    for k in range(n_scans):
        sources = write_series(tmp_path / f"src{k}", z_positions(2))
        scored = ScoredScan(f"scan_{k:016x}", "v-000000000001", 0.25 + 0.5 * (k % 2), 0.5, "1" if k % 2 else "0", "1")
        out = write_score_outputs(outbox, read_source_headers(sources), scored, rgb, b"key")
        files += [out.sr, out.sc]  # type: ignore[list-item]
        studies.append(str(pydicom.dcmread(sources[0]).StudyInstanceUID))
    return outbox, files, studies


def _in_orthanc(orthanc, study_uid: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(i["MainDicomTags"].get("SOPInstanceUID") for i in orthanc.instances_of_study(study_uid))


def test_c_store_and_stow_file_the_outputs_into_their_source_study_once(orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outbox, files, studies = _outputs(tmp_path, 2)
    settings = PacsSendSettings(send_to=orthanc.node, stow_url=orthanc.dicomweb_url, send_backoff_s=0)
    report = send_objects(outbox, files, settings)
    assert sorted(report.sent) == sorted([f.name for f in files] * 2) and not report.failed  # both destinations
    for study, pair in zip(studies, [files[:2], files[2:]], strict=True):
        uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in pair}
        assert set(_in_orthanc(orthanc, study)) == uids  # the SR and SC are in the source study
    ledger = [json.loads(line) for line in Outbox(outbox).sent_ledger.read_text().splitlines()]
    assert Counter(e["destination"] for e in ledger) == {f"dimse:{orthanc.node}": 4, f"stow:{orthanc.dicomweb_url}": 4}
    again = send_objects(outbox, files, settings)
    assert again.sent == [] and again.already_sent == 8  # recorded by SOP Instance UID: never sent twice


def test_a_pacs_that_goes_away_mid_send_gets_the_rest_from_failed_exactly_once(
    orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    outbox, files, studies = _outputs(tmp_path, 3)
    transmitted: Counter[str] = Counter()
    real, stopped = send_module._transmit, []

    def transmit(destination, settings, auth, datasets):  # type: ignore[no-untyped-def]
        failed = real(destination, settings, auth, datasets)
        transmitted.update(str(ds.SOPInstanceUID) for i, ds in enumerate(datasets) if i not in failed)
        if not stopped:  # the PACS goes down right after the first study's objects
            orthanc.stop()
            stopped.append(True)
        return failed

    monkeypatch.setattr(send_module, "_transmit", transmit)
    sleeps: list[float] = []
    settings = PacsSendSettings(send_to=orthanc.node, send_attempts=3, send_backoff_s=0.5)
    first = send_objects(outbox, files[:2], settings, sleep=sleeps.append)  # study 1: sent, then the PACS stops
    assert sorted(first.sent) == sorted(f.name for f in files[:2])
    rest = send_objects(outbox, files[2:], settings, sleep=sleeps.append)
    assert rest.sent == [] and set(rest.failed) == {f.name for f in files[2:]}
    assert set(rest.failed.values()) == {"no association (unreachable or aborted)"}
    assert sleeps == [0.5, 1.0]  # backoff doubles between the three tries
    failed = Outbox(outbox).failed
    assert sorted(p.name for p in failed.glob("*.dcm")) == sorted(f.name for f in files[2:])
    why = json.loads(Outbox(outbox).failure_reason(files[2].name).read_text())
    assert why[f"dimse:{orthanc.node}"]["attempts"] == 3
    orthanc.start()  # back (same ports, same storage)
    later = send_objects(outbox, [], settings)  # the next run: nothing new, failed/ is re-sent
    assert sorted(later.sent) == sorted(f.name for f in files[2:]) and later.resent_from_failed == 4
    assert list(failed.glob("*")) == []
    assert send_objects(outbox, files, settings).sent == []  # and nothing twice afterwards
    assert set(transmitted.values()) == {1} and len(transmitted) == 6
    for study in studies:
        assert len(_in_orthanc(orthanc, study)) == 2
    assert len(sent_uids(Outbox(outbox), f"dimse:{orthanc.node}")) == 6


def test_stow_errors_are_kept_with_the_http_status(orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outbox, files, _ = _outputs(tmp_path, 1)
    settings = PacsSendSettings(stow_url=orthanc.url + "/no-such-service", send_attempts=1)
    report = send_objects(outbox, files, settings)
    assert set(report.failed.values()) == {"STOW-RS HTTP 404"}
    assert len(list(Outbox(outbox).failed.glob("*.dcm"))) == 2


def test_bad_destinations_are_usage_errors() -> None:
    with pytest.raises(UserInputError, match="AET@HOST:PORT"):
        Destination.all_of(PacsSendSettings(send_to="pacs:104"))
    with pytest.raises(UserInputError, match="http"):
        Destination.all_of(PacsSendSettings(stow_url="pacs/dicom-web"))
    with pytest.raises(UserInputError, match="at least 1"):
        PacsSendSettings(send_attempts=0)
