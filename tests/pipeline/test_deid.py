"""De-identification: keyed pseudonyms, the allow-list, and PHI canaries through a whole ingest."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword

from pipeline.deid import (
    ALLOWED_ATTRIBUTES,
    DEMOGRAPHIC_ATTRIBUTES,
    Pseudonymizer,
    deidentify,
    load_secret,
)
from pipeline.ingest import IngestConfig, ingest
from pipeline.io.dicom import read_dicom
from tests.dicom_factory import write_series, z_positions
from tests.phi_canaries import annex_e_tags, find_canaries, plant_canaries


def test_pseudonyms_are_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"secret-a"), Pseudonymizer(b"secret-b")
    assert a.patient("MRN1") == Pseudonymizer(b"secret-a").patient("MRN1")
    assert a.patient("MRN1") != b.patient("MRN1") != a.patient("MRN2")
    assert a.patient("x").startswith("pat_") and a.study("x").startswith("stu_") and a.series("x").startswith("ser_")
    assert a.patient("x") != a.study("x")[0:4] + a.patient("x")[4:]  # kinds are domain-separated


def test_allow_list_holds_no_annex_e_attribute_and_demographics_are_opt_in() -> None:
    annex_e = set(annex_e_tags())
    assert len(annex_e) > 500
    assert not {tag_for_keyword(k) for k in ALLOWED_ATTRIBUTES} & annex_e
    assert {tag_for_keyword(k) for k in DEMOGRAPHIC_ATTRIBUTES} <= annex_e


def test_secret_comes_from_config_then_environment_then_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "secret.key"
    assert load_secret("explicit", key_file) == b"explicit"
    assert load_secret(None, key_file) == b"test-secret"
    monkeypatch.delenv("SCANLENS_SECRET")
    created = load_secret(None, key_file)
    assert len(created) == 64 and key_file.stat().st_mode & 0o077 == 0
    assert load_secret(None, key_file) == created


def test_a_deidentified_instance_carries_pseudonyms_not_identifiers(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, z_positions(1), patient_id="MRN-12345",
                          mutate=lambda ds, k: setattr(ds, "PatientSex", "F"))
    pseudo = Pseudonymizer(b"k")
    header = read_dicom(path.read_bytes())
    instance = deidentify(header, "a/b.dcm", pseudo, keep_demographics=False)
    ds = pydicom.dcmread(path)
    assert instance.patient_id == pseudo.patient("MRN-12345")
    assert instance.study_id == pseudo.study(ds.StudyInstanceUID)
    assert instance.series_id == pseudo.series(ds.SeriesInstanceUID)
    assert instance.instance_key == pseudo.scan(f"instance|{ds.SOPInstanceUID}")
    assert instance.image is header.image and instance.modality == "CT" and "PatientSex" not in instance.metadata
    assert "MRN-12345" not in repr(instance) and ds.SeriesInstanceUID not in repr(instance)
    assert deidentify(header, "a/b.dcm", pseudo, keep_demographics=True).metadata["PatientSex"] == "F"


def test_a_file_without_uids_is_its_own_study_series_and_instance(tmp_path: Path) -> None:
    def strip(ds: pydicom.Dataset, k: int) -> None:
        del ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID

    [path] = write_series(tmp_path, z_positions(1), mutate=strip)
    pseudo = Pseudonymizer(b"k")
    instance = deidentify(read_dicom(path.read_bytes()), "x/y.dcm", pseudo, keep_demographics=False)
    assert instance.patient_id is None
    assert instance.study_id == pseudo.study("no-study:x/y.dcm")
    assert instance.series_id == pseudo.series("no-series:x/y.dcm")
    assert instance.instance_key == pseudo.scan("instance|x/y.dcm")


def test_phi_canaries_never_leave_ingest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "src"
    canaries = plant_canaries(source / "series")
    assert len(canaries) > 400
    planted = pydicom.dcmread(next((source / "series").iterdir()))
    assert str(planted.PatientName).startswith("CNRY") and any(e.tag.is_private for e in planted)
    in_source = set().union(*find_canaries(source, canaries).values())
    assert in_source == set(canaries)  # the search sees every canary where it was planted
    workdir = tmp_path / "w"
    with caplog.at_level(logging.DEBUG):
        result = ingest(IngestConfig(source=source, workdir=workdir, workers=1))
        ingest(IngestConfig(source=source, workdir=workdir, workers=1))
    assert result.n_scans == 1
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    assert catalog.loc[0, "patient_id"].startswith("pat_") and catalog.loc[0, "n_source_files"] == 3
    hits = find_canaries(workdir, canaries, {"log": caplog.text, "result": repr(result)})
    assert hits == {}


def test_demographics_are_kept_only_when_configured(tmp_path: Path) -> None:
    write_series(tmp_path / "src", z_positions(3), mutate=lambda ds, k: (setattr(ds, "PatientSex", "F"), setattr(ds, "PatientAge", "054Y")))
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "plain"))
    assert "patient_sex" not in pd.read_parquet(tmp_path / "plain" / "catalog.parquet").columns
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "demo", keep_demographics=True))
    row = pd.read_parquet(tmp_path / "demo" / "catalog.parquet").iloc[0]
    assert (row["patient_sex"], row["patient_age"]) == ("F", "054Y")
