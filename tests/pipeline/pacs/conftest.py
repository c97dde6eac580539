"""A real DICOMweb archive for the tests of this folder: one Orthanc per module, emptied before each test
(starting and stopping one costs about 4 s), and a way to put small studies into it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.dicom_factory import write_series, z_positions
from tests.orthanc import Orthanc, require_orthanc


@pytest.fixture(scope="module")
def _archive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("archive")).start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def archive(_archive_server: Orthanc) -> Orthanc:
    """An empty Orthanc (DICOMweb at ``archive.dicomweb_url``), shared by the module's tests."""
    for study in _archive_server.study_ids():
        requests.delete(f"{_archive_server.url}/studies/{study}", timeout=10).raise_for_status()
    return _archive_server


def upload_study(
    server: Orthanc,
    folder: Path,
    *,
    study_date: str = "20240105",
    modality: str = "CT",
    description: str = "CHEST routine",
    n_slices: int = 2,
    n_series: int = 1,
) -> str:
    """Write a small CT-like study (``n_series`` series of ``n_slices`` slices) and store it in ``server``;
    its StudyInstanceUID."""
    study_uid = generate_uid()

    def mutate(ds: Dataset, k: int) -> None:
        ds.StudyDate, ds.Modality, ds.StudyDescription = study_date, modality, description
        ds.PatientName, ds.AccessionNumber = "CANARY^NAME", "ACCCANARY1"

    files = []
    for s in range(n_series):
        files += write_series(folder / f"series{s}", z_positions(n_slices), study_uid=study_uid, mutate=mutate)
    server.upload(files)
    return study_uid
