"""Per-scan building, the second unit of parallel work in ingest: assemble, check and write one volume.

:func:`build_scan` is top-level and takes a picklable :class:`ScanTask` so that ingest can run it
in isolated worker processes. It logs no source path or header value; what it returns holds
pseudonyms only, plus source paths relative to SRC for the manifest and the quarantine table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.deid import DicomInstance, Pseudonymizer, nifti_pseudonyms
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.probe import ProbedFile, failure_reason
from pipeline.ingest.series import plan_series, stack_slices
from pipeline.io.dicom_pixels import decode_frames
from pipeline.io.limits import ReadLimits
from pipeline.io.nifti import (
    Volume,
    canonical_volume,
    read_nifti,
    stored_content_hash,
    write_volume,
)
from pipeline.layout import Workdir
from pipeline.parallel import TaskFailure

#: Volumes are stored uncompressed: gzip cost more CPU than parsing the DICOM itself, and plain
#: NIfTI can be memory-mapped by the preprocessing step.


@dataclass
class ScanTask:
    scan_id: str
    root: str
    volume_file: str  # absolute path of the output NIfTI
    volume_relpath: str  # relative to W, for the catalogue
    previous_hash: str | None
    spacing_tolerance: float
    secret: bytes
    identity: str  # what scan_id is the keyed pseudonym of (pipeline.ingest.identity.scan_identity)
    instances: list[DicomInstance] = field(default_factory=list)
    nifti_relpath: str | None = None
    limits: ReadLimits = field(default_factory=ReadLimits)

    @property
    def member_paths(self) -> list[str]:
        return [self.nifti_relpath] if self.nifti_relpath is not None else sorted(i.relpath for i in self.instances)


@dataclass
class ScanOutcome:
    scan_id: str
    member_paths: list[str]
    row: dict[str, Any] | None = None
    file_quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    written: bool = False
    write_error: str | None = None  # writing into W failed (disk full...): the run stops, the file is not to blame


def scan_tasks(
    probed: list[ProbedFile],
    wd: Workdir,
    old_scans: pd.DataFrame,
    root: str,
    config: IngestConfig,
    secret: bytes,
) -> list[ScanTask]:
    """One task per scan among the usable probed files, in ``scan_id`` order."""
    previous_hash = dict(zip(old_scans["scan_id"], old_scans["content_hash"], strict=True))
    groups: dict[str, list[ProbedFile]] = {}
    for item in probed:
        if item.quarantine is None and item.scan_id is not None:
            groups.setdefault(item.scan_id, []).append(item)
    tasks = []
    for scan_id, members in sorted(groups.items()):
        relpath = wd.volume_ref(scan_id)
        identity = members[0].identity
        assert identity is not None  # set together with scan_id
        task = ScanTask(
            scan_id,
            root,
            str(wd.root / relpath),
            relpath,
            previous_hash.get(scan_id),
            config.spacing_tolerance,
            secret,
            identity,
            limits=config.limits,
        )
        if members[0].is_nifti:
            task.nifti_relpath = members[0].relpath
        else:
            task.instances = [m.instance for m in members if m.instance is not None]
        tasks.append(task)
    return tasks


def build_failed(task: ScanTask, failure: TaskFailure) -> ScanOutcome:
    """The outcome of a scan whose worker failed: every member file quarantined with the reason."""
    reason, detail = failure_reason(failure, "building the scan")
    outcome = ScanOutcome(task.scan_id, task.member_paths)
    outcome.file_quarantine = [(path, reason.value, detail) for path in outcome.member_paths]
    return outcome


def build_scan(task: ScanTask) -> ScanOutcome:
    """Assemble, check and write one scan. Never raises for bad data: it returns quarantine rows.

    Copies of one instance (same SOPInstanceUID, e.g. the same slice in two transfer syntaxes) are
    collapsed: the lossless copy with the first path is used, falling back to the next copy if it
    cannot be decoded, and the others are quarantined as ``duplicate_instance``.
    """
    if task.nifti_relpath is not None:
        return _build_nifti(task)
    outcome = ScanOutcome(task.scan_id, task.member_paths)
    copies: dict[str, list[DicomInstance]] = {}
    for instance in sorted(task.instances, key=lambda i: (i.image.lossy, i.relpath)):
        copies.setdefault(instance.instance_key, []).append(instance)
    chosen = [group[0] for group in copies.values()]
    try:
        plan_series(chosen, task.spacing_tolerance)
    except QuarantineError as exc:
        outcome.row = _quarantined_row(task, chosen[0], exc)
        _mark_duplicates(outcome, copies, {i.relpath for i in chosen})
        return outcome
    frames: dict[str, np.ndarray] = {}
    kept: list[DicomInstance] = []
    for group in copies.values():
        for instance in group:
            try:
                frames[instance.relpath] = decode_frames(_read(task.root, instance.relpath), instance.image)
            except QuarantineError as exc:
                outcome.file_quarantine.append((instance.relpath, exc.reason.value, exc.detail))
                continue
            kept.append(instance)
            break
    _mark_duplicates(outcome, copies, {i.relpath for i in kept} | {row[0] for row in outcome.file_quarantine})
    if not kept:
        return outcome
    try:
        plan = plan_series(kept, task.spacing_tolerance)
    except QuarantineError as exc:
        outcome.row = _quarantined_row(task, kept[0], exc)
        return outcome
    try:
        volume = canonical_volume(
            stack_slices(plan, frames), plan.affine_ras, plan.dims, plan.warnings, integral=_integral(kept)
        )
    except QuarantineError as exc:
        outcome.row = _quarantined_row(task, kept[0], exc)
        return outcome
    outcome.row = _row(task, kept[0], volume, len(plan.relpaths), plan.slice_thickness_mm)
    _store(task, volume, outcome)
    return outcome


def _read(root: str, relpath: str) -> bytes:
    try:
        return Path(root, relpath).read_bytes()
    except OSError as exc:
        raise QuarantineError(QuarantineReason.UNREADABLE_FILE, f"cannot be read ({type(exc).__name__})") from None


def _integral(instances: list[DicomInstance]) -> bool | None:
    """True when decoded values are whole numbers by construction (integer grey pixels, integer rescale)."""
    for instance in instances:
        image = instance.image
        if image.pixel_span is None or image.samples_per_pixel != 1 or image.photometric == "PALETTE COLOR":
            return None  # let compact_dtype look at the values
        if not all(float(g.rescale[0]).is_integer() and float(g.rescale[1]).is_integer() for g in image.frames):
            return None
    return True


def _mark_duplicates(outcome: ScanOutcome, copies: dict[str, list[DicomInstance]], handled: set[str]) -> None:
    for group in copies.values():
        for instance in group:
            if instance.relpath not in handled:
                outcome.file_quarantine.append(
                    (
                        instance.relpath,
                        QuarantineReason.DUPLICATE_INSTANCE.value,
                        "another file holds the same instance (same SOPInstanceUID); that copy was used",
                    )
                )


def _build_nifti(task: ScanTask) -> ScanOutcome:
    assert task.nifti_relpath is not None
    outcome = ScanOutcome(task.scan_id, [task.nifti_relpath])
    base = nifti_pseudonyms(task.identity, Pseudonymizer(task.secret))
    try:
        volume = read_nifti(Path(task.root, task.nifti_relpath), task.limits)
    except QuarantineError as exc:
        outcome.file_quarantine.append((task.nifti_relpath, exc.reason.value, exc.detail))
        return outcome
    spacing = volume.spacing_mm
    outcome.row = (
        _base_row(task)
        | base
        | {
            "patient_id": None,
            "modality": None,
            "dims": volume.dims,
            "shape": [int(s) for s in volume.data.shape],
            "spacing_mm": spacing,
            "slice_thickness_mm": None if volume.dims == 2 else float(min(spacing)),
            "n_source_files": 1,
            "content_hash": volume.content_hash,
            "status": "warning" if volume.warnings else "ok",
            "warnings": list(volume.warnings),
        }
    )
    _store(task, volume, outcome)
    return outcome


def _base_row(task: ScanTask) -> dict[str, Any]:
    return {
        "scan_id": task.scan_id,
        "manufacturer": None,
        "manufacturer_model": None,
        "body_part": None,
        "volume_path": task.volume_relpath,
        "patient_sex": None,
        "patient_age": None,
        "quarantine_reason": None,
        "quarantine_detail": None,
    }


def _identity_fields(instance: DicomInstance) -> dict[str, Any]:
    meta = instance.metadata
    return {
        "patient_id": instance.patient_id,
        "study_id": instance.study_id,
        "series_id": instance.series_id,
        "modality": meta.get("Modality"),
        "manufacturer": meta.get("Manufacturer"),
        "manufacturer_model": meta.get("ManufacturerModelName"),
        "body_part": meta.get("BodyPartExamined"),
        "patient_sex": meta.get("PatientSex"),
        "patient_age": meta.get("PatientAge"),
    }


def _row(task: ScanTask, first: DicomInstance, volume: Volume, n_files: int, thickness: float | None) -> dict[str, Any]:
    return (
        _base_row(task)
        | _identity_fields(first)
        | {
            "dims": volume.dims,
            "shape": [int(s) for s in volume.data.shape],
            "spacing_mm": volume.spacing_mm,
            "slice_thickness_mm": thickness,
            "n_source_files": n_files,
            "content_hash": volume.content_hash,
            "status": "warning" if volume.warnings else "ok",
            "warnings": list(volume.warnings),
        }
    )


def _quarantined_row(task: ScanTask, first: DicomInstance, exc: QuarantineError) -> dict[str, Any]:
    return (
        _base_row(task)
        | _identity_fields(first)
        | {
            "dims": None,
            "shape": None,
            "spacing_mm": None,
            "slice_thickness_mm": None,
            "n_source_files": len(task.instances),
            "volume_path": None,
            "content_hash": None,
            "status": "quarantined",
            "warnings": [],
            "quarantine_reason": exc.reason.value,
            "quarantine_detail": exc.detail,
        }
    )


def _store(task: ScanTask, volume: Volume, outcome: ScanOutcome) -> None:
    """Write the volume (see :func:`_write_if_new`); an OS error is the work folder's, not the file's."""
    assert outcome.row is not None
    try:
        outcome.written = _write_if_new(task, volume, outcome.row["content_hash"])
    except OSError as exc:
        outcome.write_error = f"{type(exc).__name__}: {exc.strerror or exc}"


def _write_if_new(task: ScanTask, volume: Volume, content_hash: str) -> bool:
    """Write the volume unless the file already holds this content (per the tables or its own header).

    A file recognised by its header alone was written by an interrupted run that may never have
    synced it: it is fsync'ed before the tables come to reference it.
    """
    if os.path.exists(task.volume_file):
        if task.previous_hash == content_hash:
            return False
        if stored_content_hash(Path(task.volume_file)) == content_hash:
            with open(task.volume_file, "rb") as handle:
                os.fsync(handle.fileno())
            return False
    write_volume(Path(task.volume_file), volume)
    return True
