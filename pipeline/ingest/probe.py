"""Per-file probing, the first unit of parallel work in ingest, and which files a run must read.

:func:`probe_file` is top-level and takes a picklable task so that ingest can run it in isolated
worker processes. It logs no source path or header value; what it returns holds pseudonyms only
(the header is de-identified in the worker that read it), plus the source path relative to SRC
for the manifest and the quarantine table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.deid import DicomInstance, Pseudonymizer, deidentify
from pipeline.errors import QuarantineError, QuarantineReason
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.identity import scan_identity
from pipeline.io.dicom import read_dicom
from pipeline.io.limits import ReadLimits
from pipeline.io.nifti import is_nifti
from pipeline.parallel import TaskFailure, WorkerPool, isolated_map

#: A source file as walked: (path relative to SRC, size in bytes, mtime in ns).
SourceFile = tuple[str, int, int]


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
    identity: str | None = None  # the scan it belongs to (see pipeline.ingest.identity.scan_identity)
    scan_id: str | None = None  # the keyed pseudonym of ``identity``


def probe_file(task: tuple[ProbeOptions, str, int, int]) -> ProbedFile:
    """Hash a file and parse its header (DICOM) or recognise it (NIfTI); runs in an isolated worker.

    A file over the size cap is not read; one that cannot be read is quarantined as ``unreadable_file``.
    """
    options, relpath, size, mtime_ns = task
    probed = ProbedFile(relpath, size, mtime_ns, None)
    pseudonymizer = Pseudonymizer(options.secret)
    try:
        options.limits.check_file_size(size)
        try:
            data = Path(options.root, relpath).read_bytes()
        except OSError as exc:
            raise QuarantineError(QuarantineReason.UNREADABLE_FILE, f"cannot be read ({type(exc).__name__})") from None
        probed.sha256 = hashlib.sha256(data).hexdigest()
        if is_nifti(relpath):
            probed.is_nifti = True
        else:
            header = read_dicom(data, options.limits, allow_burned_in=options.allow_burned_in)
            probed.instance = deidentify(header, relpath, pseudonymizer, options.keep_demographics)
        probed.identity = scan_identity(relpath, probed.instance)
        probed.scan_id = pseudonymizer.scan(probed.identity)
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
        return (
            QuarantineReason.TOO_LARGE,
            f"{what} ran out of the worker's memory limit (raise it with --worker-memory-mb)",
        )
    if failure.kind == "crash":
        return QuarantineReason.DECODER_CRASH, f"{what} crashed its worker process: {failure.detail}"
    return QuarantineReason.DECODER_CRASH, f"{what} failed unexpectedly ({failure.detail})"


@dataclass
class Changes:
    """What a run reads, against the previous manifest."""

    unchanged: dict[str, Any]  # relpath -> previous manifest row (mtime/size refreshed)
    probed: list[ProbedFile]  # files read this run
    dirty: set[str]  # scan ids to rebuild
    old_scan_of: dict[str, str]  # relpath -> scan id in the previous manifest
    n_read: int


def probe_changes(
    files: Sequence[SourceFile],
    old_manifest: pd.DataFrame,
    options: ProbeOptions,
    workers: int,
    config: IngestConfig,
    timings: list[tuple[str, str, float]],
    pool: WorkerPool | None = None,
) -> Changes:
    """Read new and changed files, then every other file of the scans they touch (in isolated workers).

    A file whose size and mtime match the manifest is not read (unless ``config.rehash``); one read
    again with unchanged bytes keeps its row. Appends ``(path, "probe", seconds)`` to ``timings``.
    ``pool``: warm isolated workers (see :func:`pipeline.parallel.isolated_map`).
    """
    previous = {row.source_path: row for row in old_manifest.itertuples(index=False)}
    unchanged: dict[str, Any] = {}
    to_probe: list[SourceFile] = []
    for relpath, size, mtime in files:
        old = previous.get(relpath)
        if old is not None and not config.rehash and old.size_bytes == size and old.mtime_ns == mtime:
            unchanged[relpath] = old
        else:
            to_probe.append((relpath, size, mtime))
    present = {f[0] for f in files}
    removed = [p for p in previous if p not in present]

    def probe(items: list[SourceFile], desc: str) -> list[ProbedFile]:
        done = isolated_map(
            probe_file,
            [(options, *f) for f in items],
            workers,
            desc,
            config.worker_limits,
            probe_failed,
            chunksize=32,
            pool=pool,
        )
        timings.extend((t.value.relpath, "probe", t.seconds) for t in done)
        return [t.value for t in done]

    probed = []
    for item in probe(to_probe, "reading files"):
        old = previous.get(item.relpath)
        if old is not None and item.sha256 is not None and old.sha256 == item.sha256:  # same bytes, new mtime
            unchanged[item.relpath] = old._replace(mtime_ns=item.mtime_ns, size_bytes=item.size)
        else:
            probed.append(item)

    old_scan_of = {p: r.scan_id for p, r in previous.items() if isinstance(r.scan_id, str)}
    dirty = {old_scan_of[p] for p in removed + [i.relpath for i in probed] if p in old_scan_of}
    dirty |= {i.scan_id for i in probed if i.scan_id is not None}
    rejoin = [(p, r.size_bytes, r.mtime_ns) for p, r in unchanged.items() if old_scan_of.get(p) in dirty]
    for item in probe(rejoin, "re-reading series"):
        unchanged.pop(item.relpath, None)
        probed.append(item)
    return Changes(unchanged, probed, dirty, old_scan_of, len(to_probe) + len(rejoin))
