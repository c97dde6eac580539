"""Incremental, parallel, atomic ingest of a source folder into a work folder.

Re-running on an unchanged source reads no file (size and mtime match the manifest), rewrites no
volume and leaves every table byte-identical. A new file is probed and joins its series; a
changed file (new SHA-256) rebuilds the scan it belongs to; a removed file drops out.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from pipeline.assemble import (
    ProbedFile,
    ProbeOptions,
    ScanOutcome,
    ScanTask,
    build_failed,
    build_scan,
    probe_failed,
    probe_file,
)
from pipeline.catalog import (
    MANIFEST_SCHEMA,
    QUARANTINE_SCHEMA,
    SCANS_COLUMNS,
    catalog_schema,
    join_labels,
    quarantine_frame,
    unlabeled_rows,
)
from pipeline.config import IngestConfig
from pipeline.deid import Pseudonymizer, load_secret
from pipeline.errors import UserInputError
from pipeline.labels import read_labels
from pipeline.locking import workdir_lock
from pipeline.parallel import isolated_map
from pipeline.source_walk import SkippedEntry, walk_source
from pipeline.storage import (
    Workdir,
    atomic_write_bytes,
    read_parquet,
    write_parquet_if_changed,
)

log = logging.getLogger(__name__)

#: Bump when assembly changes what a volume or a row contains: every scan is then rebuilt.
INGEST_VERSION = 1
#: Volumes are stored uncompressed: gzip cost more CPU than parsing the DICOM itself, and plain
#: NIfTI can be memory-mapped by the preprocessing step.
VOLUME_SUFFIX = ".nii"


@dataclass
class IngestResult:
    """What a run did, in counts only (safe for logs and Dagster metadata)."""

    workdir: Path
    n_source_files: int
    n_probed: int
    n_scans: int
    n_volumes_written: int
    quarantine_by_reason: dict[str, int]
    modalities: dict[str, int]
    label_counts: dict[str, dict[str, int]]
    unmatched_label_lines: list[int] = field(default_factory=list)
    tables_written: list[str] = field(default_factory=list)
    #: (source path, stage, seconds) of every file read in this run: stage ``probe`` is hashing and
    #: header parsing of that file; ``build`` is the whole build of the scan it belongs to.
    timings: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def slowest_file_seconds(self) -> float:
        """The longest time one file took: its probe plus the build of its scan."""
        per_file: dict[str, float] = {}
        for path, _, seconds in self.timings:
            per_file[path] = per_file.get(path, 0.0) + seconds
        return max(per_file.values(), default=0.0)


def _validate(config: IngestConfig) -> tuple[Path, Path]:
    source, workdir = config.source.resolve(), config.workdir.resolve()
    if not source.exists():
        raise UserInputError(f"source folder does not exist: {config.source}")
    if not source.is_dir():
        raise UserInputError(f"source is not a folder: {config.source}")
    if workdir == source or source.is_relative_to(workdir):
        raise UserInputError("the work folder must not be the source folder or contain it")
    return source, workdir


def ingest(config: IngestConfig) -> IngestResult:
    """Ingest ``config.source`` into ``config.workdir``; see the module docstring for the guarantees.

    Holds the work folder's lock (:func:`pipeline.locking.workdir_lock`) for the whole run.
    """
    source, workdir = _validate(config)
    labels = read_labels(config.labels) if config.labels is not None else None
    files, skipped = walk_source(source, workdir, config.labels.resolve() if config.labels is not None else None,
                           config.follow_external_links)
    if not files and not skipped:
        raise UserInputError(f"source folder is empty: {config.source}")
    wd = Workdir(workdir)
    wd.ensure()
    with workdir_lock(workdir, "ingest"):
        return _ingest_locked(config, source, wd, labels, files, skipped)


def _ingest_locked(
    config: IngestConfig, source: Path, wd: Workdir, labels: Any, files: list[tuple[str, int, int]],
    skipped: list[SkippedEntry],
) -> IngestResult:
    secret = load_secret(config.secret, wd.secret_file)
    pseudonymizer = Pseudonymizer(secret)
    workers = config.workers or os.cpu_count() or 1
    state_file = wd.state / "state.json"
    state = {"version": INGEST_VERSION, "fingerprint": pseudonymizer.fingerprint(),
             "keep_demographics": config.keep_demographics, "allow_burned_in": config.allow_burned_in,
             "spacing_tolerance": config.spacing_tolerance}
    old_state = json.loads(state_file.read_text()) if state_file.exists() else None
    fresh = old_state != state
    old_manifest, old_scans, old_quarantine = _previous_tables(wd, fresh)
    options = ProbeOptions(str(source), secret, config.keep_demographics, config.allow_burned_in, config.limits)
    timings: list[tuple[str, str, float]] = []
    changes = _probe_changes(files, old_manifest, options, pseudonymizer, workers, config, timings)

    tasks = _scan_tasks(changes.probed, pseudonymizer, wd, old_scans, str(source), config, secret)
    built = isolated_map(build_scan, tasks, workers, "building scans", config.worker_limits, build_failed,
                         chunksize=max(1, len(tasks) // (8 * workers)))
    outcomes = [b.value for b in built]
    failed_writes = [o.write_error for o in outcomes if o.write_error]
    if failed_writes:  # the work folder's fault (disk full, permissions), not the source's: stop, write no table
        raise OSError(f"writing {len(failed_writes)} volume(s) into {wd.volumes} failed: {failed_writes[0]}")
    for task, timed in zip(tasks, built):
        timings.extend((path, "build", timed.seconds) for path in task.member_paths)

    scans = _merge_scans(old_scans, changes.dirty, outcomes)
    manifest, file_quarantine = _manifest(
        changes.unchanged, changes.probed, outcomes, changes.old_scan_of, old_quarantine, scans, skipped
    )
    joined = join_labels(scans, manifest, labels, pseudonymizer, config.keep_demographics)
    quarantine = quarantine_frame(file_quarantine + unlabeled_rows(manifest, joined.unlabeled_scan_ids))
    quarantined = set(quarantine["source_path"])
    manifest["status"] = ["quarantined" if p in quarantined else "catalogued" for p in manifest["source_path"]]

    if any(o.written for o in outcomes):
        os.sync()  # volumes reach the disk before the tables that reference them
    written = []
    tables = [
        (wd.state / "scans.parquet", scans, None),
        (wd.manifest, manifest, MANIFEST_SCHEMA),
        (wd.quarantine, quarantine, QUARANTINE_SCHEMA),
        (wd.catalog, joined.catalog, catalog_schema(config.keep_demographics)),
    ]
    for path, frame, schema in tables:
        if write_parquet_if_changed(path, frame, schema):
            written.append(path.name)
    if fresh:
        atomic_write_bytes(state_file, json.dumps(state, sort_keys=True).encode())
    _remove_stale_volumes(wd, set(scans["volume_path"].dropna()))

    result = IngestResult(
        workdir=wd.root,
        n_source_files=len(files) + len(skipped),
        n_probed=changes.n_read,
        n_scans=len(joined.catalog),
        n_volumes_written=sum(o.written for o in outcomes),
        quarantine_by_reason=dict(sorted(Counter(quarantine["reason"]).items())),
        modalities=dict(sorted(Counter(joined.catalog["modality"].fillna("unknown")).items())),
        label_counts=_label_counts(joined.catalog),
        unmatched_label_lines=joined.unmatched_label_lines,
        tables_written=written,
        timings=timings,
    )
    log.info(
        "ingest: %d files (%d probed), %d scans catalogued, %d volumes written, quarantined %s; slowest file %.2f s",
        result.n_source_files, result.n_probed, result.n_scans, result.n_volumes_written, result.quarantine_by_reason,
        result.slowest_file_seconds,
    )
    return result


def _previous_tables(wd: Workdir, fresh: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The last run's manifest, scans and quarantine tables (empty ones when starting afresh)."""
    tables = [read_parquet(p) for p in (wd.manifest, wd.state / "scans.parquet", wd.quarantine)] if not fresh else []
    if fresh or any(t is None for t in tables):
        return (
            pd.DataFrame(columns=[f.name for f in MANIFEST_SCHEMA]),
            pd.DataFrame(columns=SCANS_COLUMNS),
            pd.DataFrame(columns=["source_path", "reason", "detail"]),
        )
    return tables[0], tables[1], tables[2]


@dataclass
class _Changes:
    unchanged: dict[str, Any]  # relpath -> previous manifest row (mtime/size refreshed)
    probed: list[ProbedFile]  # files read this run
    dirty: set[str]  # scan ids to rebuild
    old_scan_of: dict[str, str]  # relpath -> scan id in the previous manifest
    n_read: int


def _probe_changes(
    files: list[tuple[str, int, int]], old_manifest: pd.DataFrame, options: ProbeOptions,
    pseudonymizer: Pseudonymizer, workers: int, config: IngestConfig, timings: list[tuple[str, str, float]],
) -> _Changes:
    """Read new and changed files, then every other file of the scans they touch (in isolated workers)."""
    previous = {row.source_path: row for row in old_manifest.itertuples(index=False)}
    unchanged: dict[str, Any] = {}
    to_probe: list[tuple[str, int, int]] = []
    for relpath, size, mtime in files:
        old = previous.get(relpath)
        if old is not None and not config.rehash and old.size_bytes == size and old.mtime_ns == mtime:
            unchanged[relpath] = old
        else:
            to_probe.append((relpath, size, mtime))
    present = {f[0] for f in files}
    removed = [p for p in previous if p not in present]

    def probe(items: list[tuple[str, int, int]], desc: str) -> list[ProbedFile]:
        done = isolated_map(probe_file, [(options, *f) for f in items], workers, desc, config.worker_limits,
                            probe_failed, chunksize=32)
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
    dirty |= {pseudonymizer.scan(i.identity) for i in probed if i.identity is not None}
    rejoin = [(p, r.size_bytes, r.mtime_ns) for p, r in unchanged.items() if old_scan_of.get(p) in dirty]
    for item in probe(rejoin, "re-reading series"):
        unchanged.pop(item.relpath, None)
        probed.append(item)
    return _Changes(unchanged, probed, dirty, old_scan_of, len(to_probe) + len(rejoin))


def _scan_tasks(
    probed: list[ProbedFile], pseudonymizer: Pseudonymizer, wd: Workdir,
    old_scans: pd.DataFrame, root: str, config: IngestConfig, secret: bytes,
) -> list[ScanTask]:
    previous_hash = dict(zip(old_scans["scan_id"], old_scans["content_hash"]))
    groups: dict[str, list[ProbedFile]] = {}
    for item in probed:
        if item.quarantine is None and item.identity is not None:
            groups.setdefault(pseudonymizer.scan(item.identity), []).append(item)
    tasks = []
    for scan_id, members in sorted(groups.items()):
        relpath = f"volumes/{scan_id}{VOLUME_SUFFIX}"
        task = ScanTask(scan_id, root, str(wd.root / relpath), relpath, previous_hash.get(scan_id),
                        config.spacing_tolerance, secret, limits=config.limits)
        if members[0].is_nifti:
            task.nifti_relpath = members[0].relpath
        else:
            task.instances = [m.instance for m in members if m.instance is not None]
        tasks.append(task)
    return tasks


def _merge_scans(old: pd.DataFrame, dirty: set[str], outcomes: Iterable[ScanOutcome]) -> pd.DataFrame:
    kept = old[~old["scan_id"].isin(dirty)]
    new = pd.DataFrame([o.row for o in outcomes if o.row is not None], columns=SCANS_COLUMNS)
    frames = [f for f in (kept, new) if len(f)]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCANS_COLUMNS)
    return merged[SCANS_COLUMNS].sort_values("scan_id").reset_index(drop=True)


def _manifest(
    unchanged: dict[str, Any], probed: list[ProbedFile], outcomes: list[ScanOutcome],
    old_scan_of: dict[str, str], old_quarantine: pd.DataFrame, scans: pd.DataFrame, skipped: list[SkippedEntry],
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Build the manifest (without status) and every quarantine row except ``unlabeled`` ones.

    Every file that belongs to a scan identity keeps its ``scan_id``, also when it is quarantined
    (a duplicate copy, an undecodable slice, a series rejected as a whole), so that a later change
    to that scan re-reads all its files.
    """
    scan_of = {p: sid for p, sid in old_scan_of.items() if p in unchanged}
    rejected = scans[scans["quarantine_reason"].notna()].set_index("scan_id")
    file_rows = [  # files of clean scans keep their rows; unlabeled rows are recomputed from the labels
        (r.source_path, r.reason, r.detail) for r in old_quarantine.itertuples(index=False)
        if r.source_path in unchanged and r.reason != "unlabeled"
    ]
    file_rows += [(i.relpath, *i.quarantine) for i in probed if i.quarantine is not None]
    for outcome in outcomes:
        file_rows.extend(outcome.file_quarantine)
        scan_of.update({path: outcome.scan_id for path in outcome.member_paths})
    file_rows += [(s.relpath, s.reason.value, s.detail) for s in skipped]
    rows = [(p, int(r.size_bytes), int(r.mtime_ns), r.sha256) for p, r in unchanged.items()]
    rows += [(i.relpath, i.size, i.mtime_ns, i.sha256) for i in probed]
    rows += [(s.relpath, s.size, s.mtime_ns, None) for s in skipped]
    manifest = pd.DataFrame(rows, columns=["source_path", "size_bytes", "mtime_ns", "sha256"])
    manifest["scan_id"] = [scan_of.get(p) for p in manifest["source_path"]]
    manifest["status"] = None
    has_row = {row[0] for row in file_rows}
    file_rows += [
        (path, rejected.at[sid, "quarantine_reason"], rejected.at[sid, "quarantine_detail"])
        for path, sid in zip(manifest["source_path"], manifest["scan_id"])
        if sid in rejected.index and path not in has_row
    ]
    return manifest.sort_values("source_path").reset_index(drop=True), file_rows


def _remove_stale_volumes(wd: Workdir, keep: set[str]) -> None:
    for path in wd.volumes.glob("*.nii*"):
        if f"volumes/{path.name}" not in keep:
            path.unlink()


def _label_counts(catalog: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (split, label), n in catalog.groupby([catalog["split"].fillna("none"), catalog["label"].astype("string").fillna("none")]).size().items():
        counts.setdefault(str(split), {})[str(label)] = int(n)
    return counts
