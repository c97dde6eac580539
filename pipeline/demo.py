"""The bundled demo: MedMNIST archives turned into one study folder with one labels file, and an
inbox of new studies to score.

``prepare_demo_source`` imports each archive into ``source/<archive stem>/`` and merges the labels
files into one labels CSV outside the source folder (NIfTI path references are prefixed with the
sub-folder), so the source folder holds nothing but scans. It is
idempotent: a stamp records the archives' SHA-256 and the import options, and an unchanged
stamp means nothing is rewritten (so the source files keep their mtimes and ingest reads nothing).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.ingest.labels import read_labels
from pipeline.io.medmnist import import_medmnist
from pipeline.storage import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)
LABELS_HEADER = """\
# ScanLens demo labels: MedMNIST archives imported by import-medmnist, merged.
# Columns:
#   scan_ref    SeriesInstanceUID (DICOM) or path relative to the source folder (NIfTI)
#   label       integer class index, as in the archive
#   split       train, val or test, as in the archive
#   patient_id  synthetic PatientID written into the DICOM headers
#   dataset     the archive the item came from
"""


@dataclass(frozen=True)
class DemoArchive:
    """One archive to import: its path, output format and per-split item limit (None: all)."""

    npz: Path
    limit: int | None = None
    fmt: str = "dicom"


@dataclass(frozen=True)
class DemoSource:
    folder: Path
    labels: Path
    n_items: int
    rebuilt: bool


def prepare_demo_source(archives: list[DemoArchive], out: Path, labels_path: Path, seed: int = 0) -> DemoSource:
    """Import ``archives`` under ``out`` and write ``labels_path``, unless the stamp shows they are there."""
    stamp = {
        "seed": seed,
        "archives": [
            {"name": a.npz.name, "sha256": sha256_file(a.npz), "limit": a.limit, "format": a.fmt} for a in archives
        ],
    }
    stamp_path = labels_path.with_name(labels_path.name + ".stamp.json")
    if stamp_path.exists() and labels_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        n_items = len(read_labels(labels_path))
        log.info("demo source up to date (%d items)", n_items)
        return DemoSource(out, labels_path, n_items, rebuilt=False)
    frames = []
    for archive in archives:
        folder = out / archive.npz.stem
        if folder.exists():
            shutil.rmtree(folder)
        result = import_medmnist(archive.npz, folder, fmt=archive.fmt, limit=archive.limit, seed=seed)
        frame = read_labels(result.labels_path).drop(columns=["line"])
        is_path = frame["scan_ref"].str.contains("/")
        frame.loc[is_path, "scan_ref"] = archive.npz.stem + "/" + frame.loc[is_path, "scan_ref"]
        frame["dataset"] = archive.npz.stem
        frames.append(frame)
        result.labels_path.unlink()
    merged = pd.concat(frames, ignore_index=True)
    merged = merged[["scan_ref", "label", "split", "patient_id", "dataset"]]
    atomic_write_bytes(labels_path, (LABELS_HEADER + merged.to_csv(index=False)).encode())
    atomic_write_bytes(stamp_path, json.dumps(stamp, indent=1).encode())
    log.info("demo source written: %d items from %d archives", len(merged), len(archives))
    return DemoSource(out, labels_path, len(merged), rebuilt=True)


def prepare_demo_inbox(npz: Path, inbox: Path, per_split: int, seed: int) -> list[Path]:
    """Write new studies from ``npz`` (``per_split`` items per split, synthetic headers from ``seed``)
    into ``inbox``, one top-level folder per study named ``<MRN>_<accession>`` as a PACS export might
    name them, without a labels file. Studies already in the inbox are left as they are (same seed,
    same names), so a re-run changes nothing. Returns the study folders made or found."""
    staging = inbox.with_name(f".{inbox.name}.export")
    shutil.rmtree(staging, ignore_errors=True)
    import_medmnist(npz, staging, limit=per_split, seed=seed)
    inbox.mkdir(parents=True, exist_ok=True)
    studies = []
    for study in sorted(p for p in staging.glob("*/*") if p.is_dir()):
        target = inbox / f"{study.parent.name}_{study.name}"
        if not target.exists():
            shutil.move(str(study), str(target))
        studies.append(target)
    shutil.rmtree(staging)
    log.info("demo inbox: %d studies in %s", len(studies), inbox)
    return studies
