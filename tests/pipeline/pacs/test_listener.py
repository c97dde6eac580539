"""The Storage SCP, driven by a pynetdicom SCU: what it accepts, refuses, and how it stores and stops."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import BasicTextSRStorage, CTImageStorage, MRImageStorage, Verification

from pipeline.deid import Pseudonymizer
from pipeline.ingest import IngestConfig, ingest
from pipeline.pacs.listener import OUT_OF_RESOURCES, ListenerSettings, StorageListener
from pipeline.pacs.node import DicomNode
from tests.conftest import DICOM_DATA, REPO, requires_shared
from tests.dicom_factory import write_series, z_positions
from tests.orthanc import free_port

NAMES = Pseudonymizer(b"test-secret")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[StorageListener, int]]:
    scp = StorageListener(tmp_path / "inbox", ListenerSettings(port=0, allow=("MODALITY", "OTHER")), NAMES)
    _, port = scp.start()
    yield scp, port
    scp.stop(grace=5)


def _associate(port: int, calling: str = "MODALITY", contexts: tuple[tuple[str, str], ...] = ()) -> object:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    for sop, syntax in contexts:
        ae.add_requested_context(sop, syntax)
    return ae.associate("127.0.0.1", port, ae_title="SCANLENS")


def _series(tmp_path: Path, n: int = 3) -> list[Path]:
    return write_series(tmp_path / "series", z_positions(n))


def test_echo_and_store_write_pseudonymous_names_that_ingest_reads(listener, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scp, port = listener
    files = _series(tmp_path)
    datasets = [pydicom.dcmread(f) for f in files]
    assoc = _associate(port, contexts=((CTImageStorage, ExplicitVRLittleEndian),))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0, 0]
    assoc.release()
    study = datasets[0].StudyInstanceUID
    stored = sorted(p.relative_to(scp.drop.root).as_posix() for p in scp.drop.root.rglob("*.dcm"))
    assert stored == sorted(f"{NAMES.study(study)}/{NAMES.instance(ds.SOPInstanceUID)}.dcm" for ds in datasets)
    assert list(scp.drop.incoming.iterdir()) == []  # nothing half-written left behind
    back = pydicom.dcmread(scp.drop.instance(NAMES.study(study), NAMES.instance(datasets[0].SOPInstanceUID)))
    assert back.PixelData == datasets[0].PixelData and back.PatientName == datasets[0].PatientName  # stored as sent
    result = ingest(IngestConfig(source=scp.drop.root, workdir=tmp_path / "w", secret="test-secret"))
    assert result.n_scans == 1 and result.n_source_files == 3


@requires_shared
def test_every_transfer_syntax_ingest_decodes_is_accepted(listener) -> None:  # type: ignore[no-untyped-def]
    scp, port = listener
    files = sorted((DICOM_DATA / "transfer_syntaxes" / "In").glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    contexts = tuple((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets)
    assoc = _associate(port, contexts=contexts)
    accepted = {c.transfer_syntax[0] for c in assoc.accepted_contexts if c.abstract_syntax == MRImageStorage}
    assert accepted == {syntax for _, syntax in contexts}, "a transfer syntax ingest decodes was refused"
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert len(list(scp.drop.root.rglob("*.dcm"))) == len({ds.SOPInstanceUID for ds in datasets})


def test_unknown_callers_and_non_image_classes_are_rejected(listener, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    scp, port = listener
    with caplog.at_level(logging.INFO):
        stranger = _associate(port, calling="STRANGER")
        assert stranger.is_rejected
        assoc = _associate(port, contexts=((BasicTextSRStorage, ExplicitVRLittleEndian),))
    assert assoc.is_established  # Verification is accepted; the SR storage context is not
    assert [c.abstract_syntax for c in assoc.rejected_contexts] == [BasicTextSRStorage]
    assoc.release()
    assert "association from STRANGER rejected" in caplog.text
    assert scp.stats.stored == 0


def test_below_the_disk_floor_or_over_the_size_limit_stores_nothing(tmp_path: Path) -> None:
    files = _series(tmp_path, 2)
    datasets = [pydicom.dcmread(f) for f in files]
    floor = StorageListener(tmp_path / "a", ListenerSettings(port=0, min_free_bytes=2**62), NAMES)
    small = StorageListener(tmp_path / "b", ListenerSettings(port=0, max_instance_bytes=200), NAMES)  # slices: ~600 B
    for scp in (floor, small):
        _, port = scp.start()
        try:
            assoc = _associate(port, contexts=((CTImageStorage, ExplicitVRLittleEndian),))
            assert [assoc.send_c_store(ds).Status for ds in datasets] == [OUT_OF_RESOURCES] * 2
            assoc.release()
        finally:
            scp.stop(grace=5)
        assert list(scp.drop.root.rglob("*.dcm")) == [] and list(scp.drop.incoming.iterdir()) == []
    assert floor.stats.refused == {"free disk below the floor": 2}
    assert small.stats.refused[next(iter(small.stats.refused))] == 2


def test_garbage_and_truncated_datasets_are_stored_for_ingest_to_quarantine_and_the_listener_keeps_serving(
    listener, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    scp, port = listener
    good = pydicom.dcmread(_series(tmp_path, 1)[0])
    garbage, truncated = tmp_path / "garbage.dcm", tmp_path / "truncated.dcm"
    for path in (garbage, truncated):
        ds = pydicom.dcmread(write_series(tmp_path / path.stem, z_positions(1), rows=64, cols=64)[0])
        ds.save_as(path, enforce_file_format=True)
    raw = garbage.read_bytes()
    header_end = 132 + 12 + int.from_bytes(raw[140:144], "little")  # preamble, DICM, group length element
    garbage.write_bytes(raw[:header_end] + os.urandom(3000))  # valid file meta, then no dataset at all
    truncated.write_bytes(truncated.read_bytes()[:-4000])  # the pixel data cut short
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send the files' bytes as they are, undecoded
    try:
        assoc = _associate(port, contexts=((CTImageStorage, ExplicitVRLittleEndian),))
        assert [assoc.send_c_store(path).Status for path in (garbage, truncated)] == [0, 0]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assoc = _associate(port, calling="OTHER", contexts=((CTImageStorage, ExplicitVRLittleEndian),))
    assert assoc.send_c_store(good).Status == 0  # still serving
    assoc.release()
    assert scp.stats.stored == 3 and scp.stats.unreadable_headers == 1
    result = ingest(IngestConfig(source=scp.drop.root, workdir=tmp_path / "w", secret="test-secret"))
    assert result.n_scans == 1 and sum(result.quarantine_by_reason.values()) == 2, result.quarantine_by_reason


def test_addresses_parse_or_fail_in_one_line() -> None:
    assert DicomNode.parse("PACS@pacs.example.org:104") == DicomNode("PACS", "pacs.example.org", 104)
    from pipeline.errors import UserInputError

    for bad in ("PACS@host", "@host:104", "WAY_TOO_LONG_AE_TITLE@h:104", "A@h:70000", "A\\B@h:1"):
        with pytest.raises(UserInputError):
            DicomNode.parse(bad)


def test_sigterm_finishes_the_running_association_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    inbox = tmp_path / "inbox"
    env = dict(os.environ, SCANLENS_SECRET="test-secret")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "listen", "--inbox", str(inbox), "--port", str(port)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    datasets = [pydicom.dcmread(f) for f in _series(tmp_path, 6)]
    deadline = time.monotonic() + 30
    while True:
        assoc = _associate(port, contexts=((CTImageStorage, ExplicitVRLittleEndian),))
        if assoc.is_established or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert assoc.is_established
    assert assoc.send_c_store(datasets[0]).Status == 0
    proc.send_signal(signal.SIGTERM)  # mid-association: the rest must still be stored
    time.sleep(1.0)
    assert proc.poll() is None, "the listener exited with an association open"
    assert [assoc.send_c_store(ds).Status for ds in datasets[1:]] == [0] * 5
    assoc.release()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "finishing 1 association(s)" in stderr
    assert len(list(inbox.rglob("*.dcm"))) == 6
    assert _associate(port).is_established is False  # no longer listening
    for ds in datasets:  # logs: AE titles and pseudonyms only
        assert str(ds.StudyInstanceUID) not in stderr and str(ds.PatientName) not in stderr


@requires_shared
def test_a_pacs_sends_the_sts002_ct_and_ingest_assembles_it(orthanc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Orthanc (as a hospital PACS would) C-STOREs the real 48-slice CT study, RTSTRUCT included."""
    scp = StorageListener(tmp_path / "inbox", ListenerSettings(port=0, allow=("ORTHANC",)), NAMES)
    _, port = scp.start()
    try:
        _send_sts002(orthanc, scp, port, tmp_path)
    finally:
        scp.stop(grace=5)


def _send_sts002(orthanc, scp: StorageListener, port: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import requests

    files = sorted((DICOM_DATA / "sts002" / "CT").rglob("*.dcm"))
    images = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CT"]
    assert len(images) == 48 and len(files) == 49
    orthanc.add_modality("scanlens", "SCANLENS", port)
    orthanc.upload(images)
    orthanc.store_to("scanlens", orthanc.study_ids())
    assert scp.stats.stored == 48
    structure = orthanc.upload([f for f in files if f not in images])
    with pytest.raises(requests.HTTPError):  # its RT Structure Set is no image: refused at negotiation
        orthanc.post("/modalities/scanlens/store", {"Resources": structure, "Synchronous": True})
    assert scp.stats.stored == 48
    (study,) = [p for p in scp.drop.root.iterdir() if p.name.startswith("stu_")]
    result = ingest(IngestConfig(source=study, workdir=tmp_path / "w", secret="test-secret"))
    assert result.n_scans == 1 and not result.quarantine_by_reason
    import pandas as pd

    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert catalog["modality"].tolist() == ["CT"] and 48 in list(catalog["shape"].iloc[0])
