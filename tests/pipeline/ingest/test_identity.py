"""The one definition of a scan's identity: which source files form one scan."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pydicom.uid

from pipeline.deid import DicomInstance, Pseudonymizer, deidentify
from pipeline.ingest.identity import scan_identity
from pipeline.io.dicom import read_dicom
from tests.dicom_factory import write_series, z_positions

PSEUDO = Pseudonymizer(b"k")


def _identities(paths: list[Path]) -> list[str]:
    return [scan_identity(p.name, _instance(p)) for p in paths]


def _instance(path: Path) -> DicomInstance:
    return deidentify(read_dicom(path.read_bytes()), path.name, PSEUDO, keep_demographics=False)


def test_a_nifti_file_is_a_scan_of_its_own() -> None:
    assert scan_identity("a/b.nii.gz", None) == "nifti|a/b.nii.gz"
    assert scan_identity("a/b.nii.gz", None) != scan_identity("a/c.nii.gz", None)


def test_the_slices_of_one_series_share_one_identity_keyed_on_the_series_pseudonym(tmp_path: Path) -> None:
    paths = write_series(tmp_path, z_positions(3))
    identities = set(_identities(paths))
    assert len(identities) == 1
    [identity] = identities
    series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    assert identity.startswith(PSEUDO.series(series_uid) + "|") and series_uid not in identity


def test_a_series_mixing_geometries_has_one_identity_per_geometry(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    axial = write_series(tmp_path / "ax", z_positions(2), series_uid=uid)
    coronal = write_series(tmp_path / "co", [[0, 2.0 * k, 0] for k in range(2)], series_uid=uid,
                           orientation=(1, 0, 0, 0, 0, -1))
    small = write_series(tmp_path / "sm", z_positions(2), series_uid=uid, rows=4)
    spaced = write_series(tmp_path / "sp", z_positions(2), series_uid=uid, spacing=(0.5, 0.5))
    assert len({*_identities(axial), *_identities(coronal), *_identities(small), *_identities(spaced)}) == 4


def test_position_less_projection_images_are_scans_of_their_own(tmp_path: Path) -> None:
    def radiograph(ds: pydicom.Dataset, k: int) -> None:
        ds.Modality = "DX"
        del ds.ImagePositionPatient

    def ct_without_position(ds: pydicom.Dataset, k: int) -> None:
        del ds.ImagePositionPatient

    uid = pydicom.uid.generate_uid()
    assert len(set(_identities(write_series(tmp_path / "dx", z_positions(2), series_uid=uid, mutate=radiograph)))) == 2
    assert len(set(_identities(write_series(tmp_path / "ct", z_positions(2), mutate=ct_without_position)))) == 1
