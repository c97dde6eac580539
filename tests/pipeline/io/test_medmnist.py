"""import-medmnist: realistic study folders from MedMNIST archives, and the round trip through ingest."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from pipeline.errors import UserInputError
from pipeline.ingest import IngestConfig, ingest
from pipeline.ingest.labels import read_labels
from pipeline.io.medmnist import import_medmnist


def _tiny_npz(path: Path, dims: int, label_shape: str = "flat") -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n,) + (8,) * dims, dtype=np.uint8)
        labels = np.array([k % 2 for k in range(n)], dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    np.savez(path, **arrays)
    return path


def test_2d_round_trip_keeps_counts_labels_and_splits(tmp_path: Path, demo_npz: Path) -> None:
    result = import_medmnist(demo_npz, tmp_path / "src", limit=10, seed=3)
    labels = read_labels(result.labels_path)
    assert result.n_items == len(labels) == 30 and result.dims == 2
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w", labels=result.labels_path))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert len(catalog) == 30 and set(catalog["modality"]) == {"US"} and set(catalog["dims"]) == {2}
    expected = labels.groupby(["split", "label"]).size().to_dict()
    assert catalog.groupby(["split", "label"]).size().to_dict() == expected


def test_headers_carry_synthetic_phi_and_proper_geometry(tmp_path: Path, demo_npz_3d: Path) -> None:
    import_medmnist(demo_npz_3d, tmp_path / "src", limit=2, seed=0)
    files = sorted(p for p in (tmp_path / "src").rglob("IM*"))
    assert len(files) == 6 * 28
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"):
        assert str(ds.get(keyword, "")).strip(), keyword
    series = [pydicom.dcmread(f, stop_before_pixels=True) for f in files if f.parent == files[0].parent]
    z = sorted(float(s.ImagePositionPatient[2]) for s in series)
    assert np.allclose(np.diff(z), 1.0) and {float(s.SliceThickness) for s in series} == {1.0}
    assert {tuple(float(v) for v in s.ImageOrientationPatient) for s in series} == {(1, 0, 0, 0, 1, 0)}


def test_several_images_belong_to_some_synthetic_patients(tmp_path: Path, demo_npz: Path) -> None:
    result = import_medmnist(demo_npz, tmp_path / "src", seed=0)
    frame = pd.read_csv(result.labels_path, comment="#")
    per_patient = frame.groupby("patient_id").size()
    assert per_patient.max() >= 2 and (per_patient >= 2).sum() >= 20
    assert frame.groupby("patient_id")["split"].nunique().max() == 1  # a patient never spans splits


def test_limit_is_stratified_and_seeded(tmp_path: Path, demo_npz: Path) -> None:
    a = read_labels(import_medmnist(demo_npz, tmp_path / "a", limit=40, seed=7).labels_path)
    b = read_labels(import_medmnist(demo_npz, tmp_path / "b", limit=40, seed=7).labels_path)
    assert a["scan_ref"].tolist() == b["scan_ref"].tolist()
    train = a[a["split"] == "train"]["label"]
    assert len(train) == 40 and abs(train.mean() - 399 / 546) < 0.05  # class balance of the full split kept


def test_3d_as_dicom_and_as_nifti_ingest_to_the_same_volumes(tmp_path: Path) -> None:
    npz = _tiny_npz(tmp_path / "tiny3d.npz", dims=3, label_shape="column")
    for fmt in ("dicom", "nifti"):
        result = import_medmnist(npz, tmp_path / fmt, fmt=fmt, limit=2)
        ingest(IngestConfig(source=tmp_path / fmt, workdir=tmp_path / f"w_{fmt}", labels=result.labels_path))
    volumes = {}
    for fmt in ("dicom", "nifti"):
        catalog = pd.read_parquet(tmp_path / f"w_{fmt}" / "catalog.parquet").sort_values(["split", "label", "content_hash"])
        assert len(catalog) == 6 and set(catalog["dims"]) == {3}
        volumes[fmt] = sorted(
            (nib.load(tmp_path / f"w_{fmt}" / p).get_fdata().tobytes(), tuple(np.round(nib.load(tmp_path / f"w_{fmt}" / p).affine, 6).ravel()))
            for p in catalog["volume_path"]
        )
    assert volumes["dicom"] == volumes["nifti"]


def test_bad_archives_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError):
        import_medmnist(tmp_path / "missing.npz", tmp_path / "out")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(UserInputError, match="not a MedMNIST archive"):
        import_medmnist(tmp_path / "other.npz", tmp_path / "out")


def test_full_breastmnist_round_trip_gives_one_scan_per_image(tmp_path: Path, demo_npz: Path) -> None:
    result = import_medmnist(demo_npz, tmp_path / "src")
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w", labels=result.labels_path))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    archive = np.load(demo_npz)
    assert len(catalog) == sum(len(archive[f"{s}_labels"]) for s in ("train", "val", "test")) == 780
    for split in ("train", "val", "test"):
        expected = dict(zip(*np.unique(archive[f"{split}_labels"], return_counts=True)))
        got = catalog[catalog["split"] == split]["label"].value_counts().to_dict()
        assert got == {int(k): int(v) for k, v in expected.items()}, split
    assert catalog["patient_id"].nunique() < len(catalog)  # some patients have several images
