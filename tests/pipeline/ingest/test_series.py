"""Series assembly: slice order, geometry checks, the affine (LPS -> RAS) and golden volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from pipeline.deid import Pseudonymizer, deidentify
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.series import plan_series
from pipeline.io.dicom import read_dicom
from tests.conftest import DICOM_DATA, requires_shared
from tests.dicom_factory import slice_pixels, write_series, z_positions

PSEUDO = Pseudonymizer(b"k")


def _instances(paths: list[Path]):
    return [deidentify(read_dicom(p.read_bytes()), p.name, PSEUDO, keep_demographics=False) for p in paths]


def _volume_of(workdir: Path, source_path: str) -> nib.Nifti1Image:
    manifest = pd.read_parquet(workdir / "ingest_manifest.parquet").set_index("source_path")
    catalog = pd.read_parquet(workdir / "catalog.parquet").set_index("scan_id")
    return nib.load(workdir / catalog.loc[manifest.loc[source_path, "scan_id"], "volume_path"])


@requires_shared
@pytest.mark.parametrize(("modality", "voxel_tol"), [("CT", 0.0), ("PET", 1e-3)])
def test_sts002_matches_reference_nifti(tmp_path: Path, modality: str, voxel_tol: float) -> None:
    source = DICOM_DATA / "sts002" / modality / "dicom" / "image"
    ingest(IngestConfig(source=source, workdir=tmp_path / "w"))
    volume = _volume_of(tmp_path / "w", "000000.dcm")
    reference = nib.as_closest_canonical(nib.load(DICOM_DATA / "sts002" / modality / "nifti" / "image" / "image.nii.gz"))
    assert volume.shape == reference.shape == ((161, 143, 48) if modality == "CT" else (30, 27, 48))
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-3)
    difference = np.abs(volume.get_fdata() - reference.get_fdata()).max()
    assert difference <= voxel_tol
    if modality == "CT":
        assert volume.get_data_dtype() == np.int16  # HU kept as integers, bit-exact


DICOMDIR_TESTS = DICOM_DATA / "pydicom_testfiles" / "from_pydicom_wheel" / "dicomdirtests"


@requires_shared
def test_dicomdir_series_with_out_of_order_slices_is_assembled_by_position(tmp_path: Path) -> None:
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    headers = {f.name: pydicom.dcmread(f) for f in sorted(folder.iterdir())}
    z = {name: float(ds.ImagePositionPatient[2]) for name, ds in headers.items()}
    by_position = sorted(headers, key=z.get)
    by_instance = sorted(headers, key=lambda n: int(headers[n].InstanceNumber))
    assert by_position != sorted(headers) and by_position != by_instance  # names and numbers run the other way
    ingest(IngestConfig(source=folder, workdir=tmp_path / "w"))
    volume = _volume_of(tmp_path / "w", by_position[0])
    data = np.asarray(volume.dataobj)
    assert volume.shape == (16, 16, 5) and nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    for k, name in enumerate(by_position):  # HU = stored * slope + intercept; axial LPS -> RAS flips x and y
        ds = headers[name]
        hounsfield = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(data[:, :, k], hounsfield.T[::-1, ::-1])
    np.testing.assert_allclose(volume.affine[2, 3], min(z.values()), atol=1e-4)


@requires_shared
def test_radial_slices_are_never_stacked_into_a_volume(tmp_path: Path) -> None:
    """MR700 holds 7 rotated (radial) slices in one series: each is its own 2D scan."""
    ingest(IngestConfig(source=DICOMDIR_TESTS / "98892003" / "MR700", workdir=tmp_path / "w"))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert len(catalog) == 7 and set(catalog["dims"]) == {2} and catalog["series_id"].nunique() == 1


def test_slices_are_sorted_by_position_not_name_or_instance_number(tmp_path: Path) -> None:
    positions = z_positions(5)
    shuffled = [positions[i] for i in (3, 0, 4, 1, 2)]
    paths = write_series(tmp_path, shuffled, names=[f"IM{i}" for i in range(5)])
    plan = plan_series(_instances(paths))
    assert [ref.relpath for ref in plan.slices] == ["IM1", "IM3", "IM4", "IM0", "IM2"]
    assert [ref.distance for ref in plan.slices] == [-10.0, -8.0, -6.0, -4.0, -2.0]


def test_affine_converts_lps_to_ras_with_pixel_spacing_per_axis(tmp_path: Path) -> None:
    paths = write_series(tmp_path, z_positions(3, step=2.5), spacing=(0.8, 0.6))
    plan = plan_series(_instances(paths))
    expected = np.array([
        [-0.6, 0.0, 0.0, -1.5],   # i along +x (L) in LPS: column spacing, sign flipped for RAS
        [0.0, -0.8, 0.0, 3.0],    # j along +y (P) in LPS: row spacing, sign flipped
        [0.0, 0.0, 2.5, -10.0],   # k along the normal (+z, S): slice step
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(plan.affine_ras, expected)


@pytest.mark.parametrize(
    ("positions", "reason"),
    [
        ([[0, 0, z] for z in (0, 2, 4, 8, 10)], QuarantineReason.MISSING_SLICES),
        ([[0, 0, z] for z in (0, 2, 2, 4, 6)], QuarantineReason.DUPLICATE_POSITION),
        ([[0, 0, z] for z in (0, 2, 4.6, 6, 8)], QuarantineReason.INCONSISTENT_GEOMETRY),
        ([[0, 0, 0], [0, 0, 2], [3, 0, 4], [0, 0, 6]], QuarantineReason.INCONSISTENT_GEOMETRY),
    ],
    ids=["gap", "duplicate", "non-uniform", "off-line"],
)
def test_bad_geometry_is_quarantined_with_its_reason(tmp_path: Path, positions: list, reason: QuarantineReason) -> None:
    with pytest.raises(QuarantineError) as caught:
        plan_series(_instances(write_series(tmp_path, positions)))
    assert caught.value.reason is reason


def test_small_spacing_jitter_is_accepted_with_a_warning(tmp_path: Path) -> None:
    plan = plan_series(_instances(write_series(tmp_path, [[0, 0, z] for z in (0, 2, 4.04, 6, 8)])))
    assert plan.dims == 3 and any("spacing varies" in w for w in plan.warnings)


def test_gantry_tilt_keeps_the_shear_in_the_affine(tmp_path: Path) -> None:
    plan = plan_series(_instances(write_series(tmp_path, [[0, 0.5 * k, 2.0 * k] for k in range(4)])))
    np.testing.assert_allclose(plan.affine_ras[:3, 2], [0.0, -0.5, 2.0])
    assert any("gantry tilt" in w for w in plan.warnings)


def test_a_series_mixing_geometries_splits_into_scans(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    study = pydicom.uid.generate_uid()
    write_series(tmp_path / "src" / "axial", z_positions(4), series_uid=uid, study_uid=study)
    write_series(tmp_path / "src" / "coronal", [[0, 2.0 * k, 0] for k in range(3)], series_uid=uid, study_uid=study,
                 orientation=(1, 0, 0, 0, 0, -1))
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w"))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert sorted(catalog["n_source_files"]) == [3, 4]
    assert catalog["series_id"].nunique() == 1 and catalog["scan_id"].nunique() == 2


def test_volume_voxels_follow_the_slices(tmp_path: Path) -> None:
    write_series(tmp_path / "src", list(reversed(z_positions(4))))
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w"))
    volume = _volume_of(tmp_path / "w", "slice_000.dcm")
    data = np.asarray(volume.dataobj)
    assert volume.shape == (5, 6, 4)
    # File k sits at z = -4 - 2k, so the most inferior slice (first in RAS) is file 3. LPS x,y flip.
    expected_first = (slice_pixels(3, 6, 5).astype(float) - 1024).T[::-1, ::-1]
    np.testing.assert_array_equal(data[:, :, 0], expected_first)
