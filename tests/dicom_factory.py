"""Small synthetic DICOM series for geometry and de-identification tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

Mutator = Callable[[Dataset, int], None]


def slice_pixels(k: int, rows: int, cols: int) -> np.ndarray:
    """Distinct values per slice (k * 1000 + raster index) so order and orientation are testable."""
    return (k * 1000 + np.arange(rows * cols).reshape(rows, cols)).astype(np.int16)


def write_series(
    folder: Path,
    positions: Sequence[Sequence[float]],
    *,
    rows: int = 6,
    cols: int = 5,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: Sequence[float] = (0.8, 0.6),
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "PAT-0001",
    names: Sequence[str] | None = None,
    mutate: Mutator | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> list[Path]:
    """Write one CT slice per position (LPS mm); slice ``k`` holds :func:`slice_pixels` ``(k)``."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    paths = []
    for k, position in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / (names[k] if names else f"slice_{k:03d}.dcm")
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName, ds.Modality = patient_id, "TEST^PATIENT", "CT"
        ds.Manufacturer = "TestVendor"
        ds.InstanceNumber = len(positions) - k  # deliberately not the spatial order
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(v) for v in spacing]
        ds.SliceThickness = 1.0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = slice_pixels(k, rows, cols).tobytes()
        if mutate is not None:
            mutate(ds, k)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def z_positions(n: int, step: float = 2.0, start: float = -10.0) -> list[list[float]]:
    return [[1.5, -3.0, start + step * k] for k in range(n)]
