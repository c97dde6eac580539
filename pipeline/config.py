"""Frozen, typed configuration objects shared by the CLI and the Dagster assets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io.limits import ReadLimits
from pipeline.parallel import WorkerLimits


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
        limits: size caps checked from declared sizes before a file is read or decoded.
        worker_limits: wall-clock and memory limits of each isolated probe or build task.
        follow_external_links: read files through symbolic links whose target is outside ``source``
            (by default such links are quarantined as ``outside_source``).
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
    limits: ReadLimits = field(default_factory=ReadLimits)
    worker_limits: WorkerLimits = field(default_factory=WorkerLimits)
    follow_external_links: bool = False
