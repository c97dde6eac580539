"""``import-medmnist``: turn a MedMNIST ``.npz`` into a realistic study folder with labels.csv.

2D images become single-frame DICOM (Ultrasound, DX or Secondary Capture by dataset), 3D volumes
become one DICOM file per slice (CT Image Storage; ImagePositionPatient advancing 1 mm along +z in
LPS) or NIfTI files covering the same physical space. Headers carry *synthetic* patient names, IDs,
birth dates, study dates, accession numbers and UIDs so that de-identification has work to do.
About a third of patients have 2-4 images, all within one split, so patient grouping matters.

Pixel spacing is a nominal 1.0 mm: MedMNIST images are resampled and have no physical scale.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from sklearn.model_selection import train_test_split

from pipeline.errors import UserInputError
from pipeline.storage import atomic_write, atomic_write_bytes

SPLITS = ("train", "val", "test")
SOP_CLASSES = {
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
}
MODALITY_BY_NAME = {"breast": "US", "chest": "DX", "pneumonia": "DX", "vessel": "MR"}
FAMILY = ["SMITH", "GARCIA", "MULLER", "ROSSI", "TANAKA", "NOVAK", "HANSEN", "DUBOIS", "KOWALSKI", "SILVA"]
GIVEN = ["ALEX", "MARIA", "JONAS", "LENA", "ARJUN", "SOFIA", "KENJI", "AMARA", "PIET", "ZOE"]
LABELS_HEADER = """\
# ScanLens labels file written by import-medmnist.
# Columns:
#   patient_id   synthetic PatientID written into the DICOM headers (PHI-like on purpose)
#   scan_ref     SeriesInstanceUID of the scan (DICOM) or its path relative to this folder (NIfTI)
#   label        integer class index, as in the npz
#   split        train, val or test, as in the npz
#   source_index row of the item in the npz split
#   modality     DICOM modality written for the item
"""


@dataclass(frozen=True)
class ImportResult:
    n_items: int
    n_patients: int
    dims: int
    labels_path: Path


def _load(npz: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if not npz.is_file():
        raise UserInputError(f"npz file not found: {npz}")
    try:
        archive = np.load(npz)
    except Exception as exc:
        raise UserInputError(f"cannot read {npz.name} as an npz archive ({type(exc).__name__})") from exc
    images, labels = {}, {}
    for split in SPLITS:
        if f"{split}_images" not in archive or f"{split}_labels" not in archive:
            raise UserInputError(f"{npz.name} is not a MedMNIST archive: missing {split}_images or {split}_labels")
        images[split] = archive[f"{split}_images"]
        lab = archive[f"{split}_labels"]
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 1:
            raise UserInputError(f"{npz.name}: multi-label targets of shape {lab.shape} are not supported")
        labels[split] = lab.astype(int)
    return images, labels


def _subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    index = np.arange(len(labels))
    if limit is None or limit >= len(labels):
        return index
    try:
        chosen, _ = train_test_split(index, train_size=limit, stratify=labels, random_state=seed)
    except ValueError:  # too few items (fewer than classes, or a class of one): a plain random subset
        chosen, _ = train_test_split(index, train_size=limit, stratify=None, random_state=seed)
    return np.sort(chosen)


def _patients(n: int, rng: np.random.Generator, start: int) -> list[int]:
    """Assign items to synthetic patients: ~1/3 of items belong to patients with 2-4 images."""
    order = rng.permutation(n)
    owner = np.empty(n, dtype=int)
    patient, position = start, 0
    while position < n:
        size = int(rng.integers(2, 5)) if rng.random() < 0.15 else 1
        owner[order[position : position + size]] = patient
        patient, position = patient + 1, position + size
    return owner.tolist()


def import_medmnist(npz: Path, out: Path, fmt: str = "dicom", limit: int | None = None, seed: int = 0) -> ImportResult:
    """Write ``npz`` under ``out`` (see the module docstring); returns counts and the labels path."""
    if fmt not in ("dicom", "nifti"):
        raise UserInputError(f"unknown format {fmt!r}: use dicom or nifti")
    if limit is not None and limit < 1:
        raise UserInputError("--limit must be at least 1")
    images, labels = _load(npz)
    dims = images["train"].ndim - 1 - int(images["train"].shape[-1] == 3 and images["train"].ndim == 4)
    name = npz.name.lower()
    modality = next((m for key, m in MODALITY_BY_NAME.items() if key in name), "CT" if dims == 3 else "OT")
    rng = np.random.default_rng(seed)
    rows, next_patient = [], 0
    people: dict[int, dict[str, str]] = {}
    for split in SPLITS:
        chosen = _subset(labels[split], limit, seed)
        owners = _patients(len(chosen), rng, next_patient)
        next_patient = max(owners, default=next_patient - 1) + 1
        for index, owner in zip(chosen.tolist(), owners, strict=True):
            person = people.setdefault(owner, _person(rng, owner, seed))
            key = [seed, npz.name, split, index]
            series_uid = generate_uid(entropy_srcs=[str(k) for k in [*key, "series"]])
            study = {
                "StudyInstanceUID": generate_uid(entropy_srcs=[str(k) for k in [*key, "study"]]),
                "SeriesInstanceUID": series_uid,
                "StudyDate": (dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3600)))).strftime("%Y%m%d"),
                "AccessionNumber": f"ACC{int(rng.integers(10**7, 10**8))}",
            }
            folder = Path(person["PatientID"]) / study["AccessionNumber"]
            pixels = images[split][index]
            ref: str  # the SeriesInstanceUID (a str) or the NIfTI path
            if dims == 2:
                relpath = (folder / f"{series_uid[-12:]}.dcm").as_posix()
                _write_slice(out / relpath, pixels, modality, person, study, key, 1, None)
                ref = series_uid
            elif fmt == "dicom":
                for k in range(pixels.shape[0]):
                    _write_slice(
                        out / folder / f"IM{k + 1:04d}", pixels[k], modality, person, study, key, k + 1, float(k)
                    )
                ref = series_uid
            else:
                relpath = f"nifti/{person['PatientID']}_{study['AccessionNumber']}.nii.gz"
                _write_nifti(out / relpath, pixels)
                ref = relpath
            rows.append((person["PatientID"], ref, int(labels[split][index]), split, index, modality))
    frame = pd.DataFrame(rows, columns=["patient_id", "scan_ref", "label", "split", "source_index", "modality"])
    labels_path = out / "labels.csv"
    atomic_write_bytes(labels_path, (LABELS_HEADER + frame.to_csv(index=False)).encode())
    return ImportResult(len(frame), frame["patient_id"].nunique(), dims, labels_path)


def _person(rng: np.random.Generator, owner: int, seed: int) -> dict[str, str]:
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 65 * 365)))
    return {
        "PatientName": f"{FAMILY[int(rng.integers(len(FAMILY)))]}^{GIVEN[int(rng.integers(len(GIVEN)))]}",
        "PatientID": f"MRN{seed % 100:02d}{owner:06d}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": "F" if rng.random() < 0.5 else "M",
    }


def _write_slice(
    path: Path,
    pixels: np.ndarray,
    modality: str,
    person: dict[str, str],
    study: dict[str, str],
    key: list[object],
    instance: int,
    z_mm: float | None,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASSES.get(modality, SOP_CLASSES["OT"]))
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(k) for k in [*key, "instance", instance]])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer = modality, "ScanLens synthetic"
    for name, value in {**person, **study}.items():
        setattr(ds, name, value)
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = "093000"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, instance
    ds.PixelSpacing = [1.0, 1.0]
    if z_mm is not None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z_mm]
        ds.SliceThickness = 1.0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.BurnedInAnnotation = "NO"
    rgb = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    bits = 8 if modality in ("US", "OT") or rgb else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint8 if bits == 8 else np.uint16)).tobytes()
    atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True), durable=False)


def _write_nifti(path: Path, volume: np.ndarray) -> None:
    """Same physical space as the DICOM series: voxel [col, row, slice], LPS 1 mm grid, as RAS."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)).astype(np.uint16), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    atomic_write(path, lambda tmp: nib.save(image, str(tmp)), durable=False)
