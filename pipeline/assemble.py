"""Per-file probing and per-scan building: the two units of parallel work in ingest.

Both functions are top-level and take picklable tasks so that ingest can run them in worker
processes. Neither logs source paths or header values; what they return holds pseudonyms only,
plus source paths relative to SRC for the manifest and the quarantine table.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.deid import Pseudonymizer
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.io.dicom import DicomInstance, decode_frames, parse_dicom
from pipeline.io.limits import ReadLimits
from pipeline.io.nifti import (
    Volume,
    canonical_volume,
    is_nifti,
    read_nifti,
    stored_content_hash,
    write_volume,
)
from pipeline.io.series import group_key, plan_series, stack_slices
from pipeline.parallel import TaskFailure


@dataclass(frozen=True)
class ProbeOptions:
    """What every probe needs besides the file: the key, the de-identification switches and the size caps."""

    root: str
    secret: bytes
    keep_demographics: bool
    allow_burned_in: bool
    limits: ReadLimits = field(default_factory=ReadLimits)


@dataclass
class ProbedFile:
    """One source file after hashing and header parsing."""

    relpath: str
    size: int
    mtime_ns: int
    sha256: str | None  # None when the file was not read (over the size cap, unreadable, its worker failed)
    instance: DicomInstance | None = None
    is_nifti: bool = False
    quarantine: tuple[str, str] | None = None  # (reason, detail)
    identity: str | None = None  # what the scan_id is the keyed hash of (see scan_identity)


def probe_file(task: tuple[ProbeOptions, str, int, int]) -> ProbedFile:
    """Hash a file and parse its header (DICOM) or recognise it (NIfTI); runs in an isolated worker.

    A file over the size cap is not read; one that cannot be read is quarantined as ``unreadable_file``.
    """
    options, relpath, size, mtime_ns = task
    probed = ProbedFile(relpath, size, mtime_ns, None)
    try:
        options.limits.check_file_size(size)
        try:
            data = Path(options.root, relpath).read_bytes()
        except OSError as exc:
            raise QuarantineError(QuarantineReason.UNREADABLE_FILE, f"cannot be read ({type(exc).__name__})")
        probed.sha256 = hashlib.sha256(data).hexdigest()
        if is_nifti(relpath):
            probed.is_nifti = True
        else:
            probed.instance = parse_dicom(data, relpath, Pseudonymizer(options.secret), options.keep_demographics,
                                          options.allow_burned_in, options.limits)
        probed.identity = scan_identity(probed)
    except QuarantineError as exc:
        probed.instance = None
        probed.quarantine = (exc.reason.value, exc.detail)
    return probed


def probe_failed(task: tuple[ProbeOptions, str, int, int], failure: TaskFailure) -> ProbedFile:
    """The quarantined :class:`ProbedFile` of a probe whose worker failed (crash, timeout, memory, error)."""
    _, relpath, size, mtime_ns = task
    reason, detail = failure_reason(failure, "reading the header")
    return ProbedFile(relpath, size, mtime_ns, None, quarantine=(reason.value, detail))


def failure_reason(failure: TaskFailure, what: str) -> tuple[QuarantineReason, str]:
    """The quarantine reason and detail for an isolated task that gave no result."""
    if failure.kind == "timeout":
        return QuarantineReason.DECODER_TIMEOUT, f"{what} ran past the per-task time limit: {failure.detail}"
    if failure.kind == "memory":
        return QuarantineReason.TOO_LARGE, f"{what} ran out of the worker's memory limit (raise it with --worker-memory-mb)"
    if failure.kind == "crash":
        return QuarantineReason.DECODER_CRASH, f"{what} crashed its worker process: {failure.detail}"
    return QuarantineReason.DECODER_CRASH, f"{what} failed unexpectedly ({failure.detail})"


def scan_identity(probed: ProbedFile) -> str:
    """The string whose keyed hash is the ``scan_id`` of the scan this file belongs to."""
    if probed.is_nifti:
        return f"nifti|{probed.relpath}"
    if probed.instance is None:
        raise QuarantineError(QuarantineReason.NOT_DICOM, "no parsed header to group by")
    return group_key(probed.instance)


@dataclass
class ScanTask:
    scan_id: str
    root: str
    volume_file: str  # absolute path of the output NIfTI
    volume_relpath: str  # relative to W, for the catalogue
    previous_hash: str | None
    spacing_tolerance: float
    secret: bytes
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
    for instance in sorted(task.instances, key=lambda i: (i.lossy, i.relpath)):
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
                frames[instance.relpath] = decode_frames(_read(task.root, instance.relpath), instance)
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
        volume = canonical_volume(stack_slices(plan, frames), plan.affine_ras, plan.dims, plan.warnings,
                                  integral=_integral(kept))
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
        raise QuarantineError(QuarantineReason.UNREADABLE_FILE, f"cannot be read ({type(exc).__name__})")


def _integral(instances: list[DicomInstance]) -> bool | None:
    """True when decoded values are whole numbers by construction (integer grey pixels, integer rescale)."""
    for instance in instances:
        if instance.pixel_span is None or instance.samples_per_pixel != 1 or instance.photometric == "PALETTE COLOR":
            return None  # let compact_dtype look at the values
        if not all(float(g.rescale[0]).is_integer() and float(g.rescale[1]).is_integer() for g in instance.frames):
            return None
    return True


def _mark_duplicates(outcome: ScanOutcome, copies: dict[str, list[DicomInstance]], handled: set[str]) -> None:
    for group in copies.values():
        for instance in group:
            if instance.relpath not in handled:
                outcome.file_quarantine.append((
                    instance.relpath, QuarantineReason.DUPLICATE_INSTANCE.value,
                    "another file holds the same instance (same SOPInstanceUID); that copy was used",
                ))


def _build_nifti(task: ScanTask) -> ScanOutcome:
    assert task.nifti_relpath is not None
    outcome = ScanOutcome(task.scan_id, [task.nifti_relpath])
    pseudonymizer = Pseudonymizer(task.secret)
    identity = f"nifti|{task.nifti_relpath}"
    base = {"study_id": pseudonymizer.study(identity), "series_id": pseudonymizer.series(identity)}
    try:
        volume = read_nifti(Path(task.root, task.nifti_relpath), task.limits)
    except QuarantineError as exc:
        outcome.file_quarantine.append((task.nifti_relpath, exc.reason.value, exc.detail))
        return outcome
    spacing = volume.spacing_mm
    outcome.row = _base_row(task) | base | {
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
    _store(task, volume, outcome)
    return outcome


def _base_row(task: ScanTask) -> dict[str, Any]:
    return {
        "scan_id": task.scan_id, "manufacturer": None, "manufacturer_model": None, "body_part": None,
        "volume_path": task.volume_relpath, "patient_sex": None, "patient_age": None,
        "quarantine_reason": None, "quarantine_detail": None,
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
    return _base_row(task) | _identity_fields(first) | {
        "dims": volume.dims,
        "shape": [int(s) for s in volume.data.shape],
        "spacing_mm": volume.spacing_mm,
        "slice_thickness_mm": thickness,
        "n_source_files": n_files,
        "content_hash": volume.content_hash,
        "status": "warning" if volume.warnings else "ok",
        "warnings": list(volume.warnings),
    }


def _quarantined_row(task: ScanTask, first: DicomInstance, exc: QuarantineError) -> dict[str, Any]:
    return _base_row(task) | _identity_fields(first) | {
        "dims": None, "shape": None, "spacing_mm": None, "slice_thickness_mm": None,
        "n_source_files": len(task.instances), "volume_path": None, "content_hash": None,
        "status": "quarantined", "warnings": [],
        "quarantine_reason": exc.reason.value, "quarantine_detail": exc.detail,
    }


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
