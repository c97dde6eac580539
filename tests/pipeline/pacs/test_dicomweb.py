"""QIDO-RS search and WADO-RS retrieval (pipeline.pacs.dicomweb) against a real Orthanc with DICOMweb."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.ingest import IngestConfig, ingest
from pipeline.layout import StudyDrop
from pipeline.logsafety import install as install_log_redaction
from pipeline.pacs.dicomweb import archive_client, fetch_studies, search_studies
from pipeline.settings.pacs import PacsAuthSettings
from tests.orthanc import Orthanc, free_port
from tests.phi_canaries import plant_canaries
from tests.pipeline.pacs.conftest import upload_study

NAMES = Pseudonymizer(b"test-secret")
FILE_NAME = re.compile(r"^stu_[0-9a-f]{16}/ins_[0-9a-f]{16}\.dcm$")


def _client(server: Orthanc, **auth: Any):  # type: ignore[no-untyped-def]
    return archive_client(server.dicomweb_url, PacsAuthSettings(**auth))


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_fetch_names_files_by_pseudonym_ingest_reads_them_and_a_second_run_requests_nothing(
    archive: Orthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = plant_canaries(tmp_path / "canary", n_slices=3)
    archive.upload(sorted((tmp_path / "canary").glob("*.dcm")))
    second = upload_study(archive, tmp_path / "s2", n_slices=2, n_series=2)
    uids = [s.uid for s in search_studies(_client(archive))]
    assert second in uids and len(uids) == 2
    out = tmp_path / "out"
    install_log_redaction()  # as the command line and the Dagster code location do: urllib3 logs URLs
    with caplog.at_level(logging.DEBUG):
        result = fetch_studies(_client(archive), StudyDrop(out), NAMES, uids, workers=2)
    counts = {s.key: (s.found, s.retrieved, s.skipped, s.n_failed) for s in result.studies}
    (first,) = set(uids) - {second}
    assert counts == {NAMES.study(first): (3, 3, 0, 0), NAMES.study(second): (4, 4, 0, 0)}
    files = _files(out)
    assert len(files) == 7 and all(FILE_NAME.match(name) for name in files), files
    assert {name.split("/")[0] for name in files} == {NAMES.study(uid) for uid in uids}
    text = caplog.text + repr(result) + "".join(s.summary() for s in result.studies)
    for secret in [*uids, *canaries, "CANARY^NAME", "PAT-0001"]:
        assert secret not in text and secret not in " ".join(files)
    done = ingest(IngestConfig(source=out, workdir=tmp_path / "w", secret="test-secret"))
    assert done.n_scans == 3 and not done.quarantine_by_reason

    client = _client(archive)
    calls: list[str] = []
    original = client.retrieve_instance
    monkeypatch.setattr(client, "retrieve_instance", lambda *a, **k: calls.append("wado") or original(*a, **k))
    again = fetch_studies(client, StudyDrop(out), NAMES, uids)
    assert calls == [] and again.total("skipped") == 7 and again.total("retrieved") == 0
    assert _files(out) == files  # nothing rewritten


def test_retrievals_run_in_parallel_within_the_bound(
    archive: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = upload_study(archive, tmp_path / "s", n_slices=8)
    client = _client(archive)
    original, lock = client.retrieve_instance, threading.Lock()
    running, peak = [0], [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(client, "retrieve_instance", counting)
    started = time.monotonic()
    result = fetch_studies(client, StudyDrop(tmp_path / "out"), NAMES, [uid], workers=3)
    assert result.studies[0].retrieved == 8 and peak[0] == 3
    assert time.monotonic() - started < 8 * 0.1  # not one after the other


def test_a_failed_instance_is_counted_and_the_rest_retrieved(
    archive: Orthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = upload_study(archive, tmp_path / "s", n_slices=3)
    client = _client(archive)
    victim = archive.instances_of_study(uid)[0]
    listing = client.search_for_instances

    def list_then_delete(*args: Any, **kwargs: Any) -> Any:  # the instance goes between search and retrieve
        found = listing(*args, **kwargs)
        requests.delete(f"{archive.url}/instances/{victim['ID']}", timeout=10)
        return found

    monkeypatch.setattr(client, "search_for_instances", list_then_delete)
    with caplog.at_level(logging.INFO):
        study = fetch_studies(client, StudyDrop(tmp_path / "out"), NAMES, [uid]).studies[0]
    assert (study.found, study.retrieved, dict(study.failed), study.complete) == (3, 2, {"HTTP 404": 1}, False)
    sop = victim["MainDicomTags"]["SOPInstanceUID"]
    assert NAMES.instance(sop) in caplog.text and "HTTP 404" in caplog.text
    assert sop not in caplog.text and uid not in caplog.text
    assert study.summary().endswith("; 1 failed (HTTP 404: 1)")
    # nothing to retry once the archive no longer lists it; the others are already there
    again = fetch_studies(_client(archive), StudyDrop(tmp_path / "out"), NAMES, [uid]).studies[0]
    assert (again.found, again.retrieved, again.skipped, again.complete) == (2, 0, 2, True)


def test_a_study_the_archive_lacks_is_reported_as_not_found(archive: Orthanc, tmp_path: Path) -> None:
    study = fetch_studies(_client(archive), StudyDrop(tmp_path / "out"), NAMES, ["1.2.3.4.5"]).studies[0]
    assert not study.complete and study.summary() == f"{NAMES.study('1.2.3.4.5')}: not found in the archive"


def test_search_matches_date_modality_and_a_description_word_case_insensitively(
    archive: Orthanc, tmp_path: Path
) -> None:
    old = upload_study(archive, tmp_path / "a", study_date="20231231", description="chest CT")
    chest = upload_study(archive, tmp_path / "b", study_date="20240110", description="Low-dose CHEST scan")
    early = upload_study(archive, tmp_path / "c", study_date="20240102", description="thorax chest")
    upload_study(archive, tmp_path / "d", study_date="20240103", modality="MR", description="chest MR")
    upload_study(archive, tmp_path / "e", study_date="20240104", description="abdomen")
    upload_study(archive, tmp_path / "f", study_date="", description="chest, no date")
    client = _client(archive)
    found = search_studies(client, date(2024, 1, 1), "ct", "Chest")
    assert [s.uid for s in found] == [early, chest]  # oldest first
    assert [s.study_date for s in found] == ["20240102", "20240110"] and found[0].modalities == ("CT",)
    assert len(search_studies(client)) == 6 and old in [s.uid for s in search_studies(client, None, "CT", "chest")]
    assert len(search_studies(client, date(2024, 1, 1))) == 4  # the undated study only without a date


def test_an_archive_that_cannot_be_reached_is_one_line_after_a_few_seconds(tmp_path: Path) -> None:
    client = archive_client(f"http://127.0.0.1:{free_port()}/dicom-web", PacsAuthSettings())
    started = time.monotonic()
    with pytest.raises(
        UserInputError, match=r"^cannot reach the DICOMweb server 127\.0\.0\.1:\d+ \(ConnectionError\)$"
    ):
        search_studies(client)
    assert 2.5 < time.monotonic() - started < 10  # 3 tries, 1 s and 2 s apart (dicomweb-client alone: 30 s)
    client.set_http_retry_params(retry=False)
    with pytest.raises(UserInputError, match="cannot reach"):
        fetch_studies(client, StudyDrop(tmp_path / "out"), NAMES, ["1.2.3"])


def test_basic_authentication_from_the_environment(
    orthanc_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secured = orthanc_factory("secured", users={"scanlens": "s3cret"})
    uid = upload_study(secured, tmp_path / "s")
    with pytest.raises(UserInputError, match=r"refused the request \(HTTP 401\).*--pacs-auth") as refused:
        fetch_studies(_client(secured), StudyDrop(tmp_path / "out"), NAMES, [uid])
    assert "\n" not in str(refused.value)
    monkeypatch.setenv("SCANLENS_PACS_USER", "scanlens")
    monkeypatch.setenv("SCANLENS_PACS_PASSWORD", "wrong")
    with pytest.raises(UserInputError, match="HTTP 401"):
        search_studies(_client(secured, auth="basic"))
    monkeypatch.setenv("SCANLENS_PACS_PASSWORD", "s3cret")
    assert [s.uid for s in search_studies(_client(secured, auth="basic"))] == [uid]
    result = fetch_studies(_client(secured, auth="basic"), StudyDrop(tmp_path / "out"), NAMES, [uid])
    assert result.studies[0].complete and result.total("retrieved") == 2


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_bearer_token_is_sent_and_a_refusal_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SCANLENS_PACS_TOKEN", "tok-123")
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        client = archive_client(url, PacsAuthSettings(auth="bearer"))
        with pytest.raises(UserInputError, match=r"refused the request \(HTTP 401\)") as refused:
            search_studies(client)
        assert _Recorder.seen == ["Bearer tok-123"] and "tok-123" not in str(refused.value)
    finally:
        server.shutdown()


def test_switching_tls_verification_off_warns(archive: Orthanc, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        search_studies(_client(archive, tls_verify=False))
    assert "TLS certificate verification of the DICOMweb server is off" in caplog.text
