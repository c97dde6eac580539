"""What one ingest run is asked to do: :class:`IngestConfig`, the settings plus the folders and key."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pydantic.dataclasses import dataclass

from pipeline.settings.fields import SETTINGS
from pipeline.settings.ingest import IngestSettings


@dataclass(frozen=True, kw_only=True, config=SETTINGS)
class IngestConfig(IngestSettings):
    """How ``ingest`` reads a source folder and writes a work folder: the :class:`IngestSettings`, and

    Attributes:
        source: folder scanned recursively for DICOM files, DICOMDIRs and NIfTI volumes (never modified).
        workdir: the ScanLens work folder ``W``.
        labels: optional labels CSV (columns ``scan_ref`` and ``label``; optional ``patient_id``, ``split``).
        secret: pseudonymisation key; ``None`` means ``$SCANLENS_SECRET`` or, failing that, a random key
            created once in ``W/.scanlens/secret.key``.
    """

    source: Path
    workdir: Path
    labels: Path | None = None
    secret: str | None = None

    @classmethod
    def of(
        cls,
        settings: IngestSettings,
        *,
        source: Path,
        workdir: Path,
        labels: Path | None = None,
        secret: str | None = None,
    ) -> IngestConfig:
        """The run of ``settings`` on these folders."""
        return cls(source=source, workdir=workdir, labels=labels, secret=secret, **asdict(settings))
