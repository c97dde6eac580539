"""Frozen, typed configuration objects shared by the CLI and the Dagster assets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IngestConfig:
    """How ``ingest`` reads a source folder and writes a work folder.

    Attributes:
        source: folder scanned recursively for DICOM files, DICOMDIRs and NIfTI volumes (never modified).
        workdir: the ScanLens work folder ``W``.
        labels: optional labels CSV (columns ``scan_ref`` and ``label``; optional ``patient_id``, ``split``).
        secret: pseudonymisation key; ``None`` means ``$SCANLENS_SECRET`` or, failing that, a random key
            created once in ``W/.scanlens/secret.key``.
        keep_demographics: keep PatientSex and PatientAge (both PS3.15 Annex E attributes) for subgroup analysis.
        allow_burned_in: ingest images whose BurnedInAnnotation is YES instead of quarantining them.
        spacing_tolerance: relative deviation of slice spacing from the median that is accepted with a
            warning; larger deviations quarantine the series.
        workers: parallel parser processes; ``None`` means one per CPU core.
        rehash: hash every source file even when its size and mtime match the manifest.
    """

    source: Path
    workdir: Path
    labels: Path | None = None
    secret: str | None = None
    keep_demographics: bool = False
    allow_burned_in: bool = False
    spacing_tolerance: float = 0.05
    workers: int | None = None
    rehash: bool = False
