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

import pandas as pd

from pipeline.deid import project_pseudonymizer
from pipeline.errors import UserInputError
from pipeline.ingest.build import build_failed, build_scan, scan_tasks
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.labels import join_labels, read_labels
from pipeline.ingest.probe import ProbeOptions, SourceFile, probe_changes
from pipeline.ingest.tables import (
    MANIFEST_SCHEMA,
    QUARANTINE_SCHEMA,
    build_manifest,
    catalog_schema,
    merge_scans,
    previous_tables,
    quarantine_frame,
    unlabeled_rows,
)
from pipeline.layout import Workdir
from pipeline.locking import workdir_lock
from pipeline.parallel import WorkerPool, isolated_map
from pipeline.source_walk import SkippedEntry, walk_source
from pipeline.storage import atomic_write_bytes, write_parquet_if_changed

log = logging.getLogger(__name__)

#: Bump when assembly changes what a volume or a row contains: every scan is then rebuilt.
INGEST_VERSION = 1
#: Up to this many new volumes are fsync'ed one by one; more, and the file systems are synced at once.
SYNC_EACH_UP_TO = 16


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
    #: Seconds the isolated tasks took, each once (probes and scan builds); the rest of the run's wall
    #: time is its set-up: the walk, starting workers, the tables.
    task_seconds: float = 0.0

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


def ingest(config: IngestConfig, pool: WorkerPool | None = None) -> IngestResult:
    """Ingest ``config.source`` into ``config.workdir``; see the module docstring for the guarantees.

    Holds the work folder's lock (:func:`pipeline.locking.workdir_lock`) for the whole run. ``pool``:
    warm isolated workers to read the files with (a long-running scorer ingests one small study after
    another); by default each of the two parallel steps starts and stops its own workers.
    """
    source, workdir = _validate(config)
    labels = read_labels(config.labels) if config.labels is not None else None
    files, skipped = walk_source(
        source, workdir, config.labels.resolve() if config.labels is not None else None, config.follow_external_links
    )
    if not files and not skipped:
        raise UserInputError(f"source folder is empty: {config.source}")
    wd = Workdir(workdir)
    wd.ensure()
    with workdir_lock(workdir, "ingest"):
        return _ingest_locked(config, source, wd, labels, files, skipped, pool)


def _ingest_locked(
    config: IngestConfig,
    source: Path,
    wd: Workdir,
    labels: pd.DataFrame | None,
    files: list[SourceFile],
    skipped: list[SkippedEntry],
    pool: WorkerPool | None = None,
) -> IngestResult:
    secret, pseudonymizer = project_pseudonymizer(config.secret, wd.root)
    workers = config.workers or os.cpu_count() or 1
    state_file = wd.ingest_state
    state = {
        "version": INGEST_VERSION,
        "fingerprint": pseudonymizer.fingerprint(),
        "keep_demographics": config.keep_demographics,
        "allow_burned_in": config.allow_burned_in,
        "spacing_tolerance": config.spacing_tolerance,
    }
    old_state = json.loads(state_file.read_text()) if state_file.exists() else None
    fresh = old_state != state
    old_manifest, old_scans, old_quarantine = previous_tables(wd, fresh)
    options = ProbeOptions(str(source), secret, config.keep_demographics, config.allow_burned_in, config.limits)
    timings: list[tuple[str, str, float]] = []
    changes = probe_changes(files, old_manifest, options, workers, config, timings, pool)

    tasks = scan_tasks(changes.probed, wd, old_scans, str(source), config, secret)
    built = isolated_map(
        build_scan,
        tasks,
        workers,
        "building scans",
        config.worker_limits,
        build_failed,
        chunksize=max(1, len(tasks) // (8 * workers)),
        pool=pool,
    )
    outcomes = [b.value for b in built]
    failed_writes = [o.write_error for o in outcomes if o.write_error]
    if failed_writes:  # the work folder's fault (disk full, permissions), not the source's: stop, write no table
        raise OSError(f"writing {len(failed_writes)} volume(s) into {wd.volumes} failed: {failed_writes[0]}")
    task_seconds = sum(seconds for _, _, seconds in timings) + sum(timed.seconds for timed in built)
    for task, timed in zip(tasks, built, strict=True):
        timings.extend((path, "build", timed.seconds) for path in task.member_paths)

    scans = merge_scans(old_scans, changes.dirty, outcomes)
    manifest, file_quarantine = build_manifest(
        changes.unchanged, changes.probed, outcomes, changes.old_scan_of, old_quarantine, scans, skipped
    )
    joined = join_labels(scans, manifest, labels, pseudonymizer, config.keep_demographics)
    quarantine = quarantine_frame(file_quarantine + unlabeled_rows(manifest, joined.unlabeled_scan_ids))
    quarantined = set(quarantine["source_path"])
    manifest["status"] = ["quarantined" if p in quarantined else "catalogued" for p in manifest["source_path"]]

    _sync_volumes(wd, [t.volume_file for t, o in zip(tasks, outcomes, strict=True) if o.written])
    written = []
    tables = [
        (wd.scans_table, scans, None),
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
        task_seconds=task_seconds,
    )
    log.info(
        "ingest: %d files (%d probed), %d scans catalogued, %d volumes written, quarantined %s; slowest file %.2f s",
        result.n_source_files,
        result.n_probed,
        result.n_scans,
        result.n_volumes_written,
        result.quarantine_by_reason,
        result.slowest_file_seconds,
    )
    return result


def _sync_volumes(wd: Workdir, paths: list[str]) -> None:
    """Volumes reach the disk before the tables that reference them. A few (one study being scored)
    are fsync'ed with their folder: a system-wide ``sync`` would also wait for every other process's
    dirty pages, a fixed cost per run on a busy machine. Many are synced at once."""
    if len(paths) > SYNC_EACH_UP_TO:
        os.sync()
        return
    for path in [*paths, str(wd.volumes)] if paths else []:  # the folder: the renames that put them there
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_volumes(wd: Workdir, keep: set[str]) -> None:
    for path in wd.volumes.glob("*.nii*"):
        if wd.file_ref(path) not in keep:
            path.unlink()


def _label_counts(catalog: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (split, label), n in (
        catalog.groupby([catalog["split"].fillna("none"), catalog["label"].astype("string").fillna("none")])
        .size()
        .items()
    ):
        counts.setdefault(str(split), {})[str(label)] = int(n)
    return counts
