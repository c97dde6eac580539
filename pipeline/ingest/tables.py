"""The three public ingest tables, the internal per-scan table, and how a run builds them.

* ``catalog.parquet``: one row per usable scan (pseudonymous ids only; see :data:`CATALOG_COLUMNS`).
  Labels join it in :func:`pipeline.ingest.labels.join_labels`.
* ``quarantine.parquet``: one row per source file that is not part of a catalogued scan,
  with a snake_case ``reason`` and a human ``detail``.
* ``ingest_manifest.parquet``: every source file with size, mtime, SHA-256 and its ``scan_id``.

Only the last two hold source paths (relative to SRC): they are the data steward's link back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.errors import QuarantineReason
from pipeline.ingest.build import ScanOutcome
from pipeline.ingest.probe import ProbedFile
from pipeline.layout import Workdir
from pipeline.source_walk import SkippedEntry
from pipeline.storage import read_parquet

CATALOG_COLUMNS = [
    "scan_id",
    "patient_id",
    "study_id",
    "series_id",
    "modality",
    "manufacturer",
    "manufacturer_model",
    "body_part",
    "dims",
    "shape",
    "spacing_mm",
    "slice_thickness_mm",
    "n_source_files",
    "volume_path",
    "content_hash",
    "label",
    "split",
    "status",
    "warnings",
]
DEMOGRAPHIC_COLUMNS = ["patient_sex", "patient_age"]

CATALOG_SCHEMA_FIELDS = [
    ("scan_id", pa.string()),
    ("patient_id", pa.string()),
    ("study_id", pa.string()),
    ("series_id", pa.string()),
    ("modality", pa.string()),
    ("manufacturer", pa.string()),
    ("manufacturer_model", pa.string()),
    ("body_part", pa.string()),
    ("dims", pa.int8()),
    ("shape", pa.list_(pa.int32())),
    ("spacing_mm", pa.list_(pa.float64())),
    ("slice_thickness_mm", pa.float64()),
    ("n_source_files", pa.int32()),
    ("volume_path", pa.string()),
    ("content_hash", pa.string()),
    ("label", pa.int64()),
    ("split", pa.string()),
    ("status", pa.string()),
    ("warnings", pa.list_(pa.string())),
]
QUARANTINE_SCHEMA = pa.schema([("source_path", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
MANIFEST_SCHEMA = pa.schema(
    [
        ("source_path", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("scan_id", pa.string()),
        ("status", pa.string()),
    ]
)
#: Internal per-scan table (``W/.scanlens/scans.parquet``): the catalogue columns before labels, plus
#: ``quarantine_reason``/``quarantine_detail`` for scans rejected as a whole. No source paths.
SCANS_COLUMNS = (
    [c for c in CATALOG_COLUMNS if c not in ("label", "split")]
    + DEMOGRAPHIC_COLUMNS
    + [
        "quarantine_reason",
        "quarantine_detail",
    ]
)


def catalog_schema(keep_demographics: bool) -> pa.Schema:
    fields = list(CATALOG_SCHEMA_FIELDS)
    if keep_demographics:
        fields += [("patient_sex", pa.string()), ("patient_age", pa.string())]
    return pa.schema(fields)


def previous_tables(wd: Workdir, fresh: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The last run's manifest, scans and quarantine tables (empty ones when starting afresh)."""
    tables = [read_parquet(p) for p in (wd.manifest, wd.scans_table, wd.quarantine)] if not fresh else []
    if fresh or any(t is None for t in tables):
        return (
            pd.DataFrame(columns=[f.name for f in MANIFEST_SCHEMA]),
            pd.DataFrame(columns=SCANS_COLUMNS),
            pd.DataFrame(columns=["source_path", "reason", "detail"]),
        )
    return tables[0], tables[1], tables[2]


def merge_scans(old: pd.DataFrame, dirty: set[str], outcomes: Iterable[ScanOutcome]) -> pd.DataFrame:
    """The scans table: the previous rows of scans not rebuilt, plus this run's rows, by ``scan_id``."""
    kept = old[~old["scan_id"].isin(dirty)]
    new = pd.DataFrame([o.row for o in outcomes if o.row is not None], columns=SCANS_COLUMNS)
    frames = [f for f in (kept, new) if len(f)]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCANS_COLUMNS)
    return merged[SCANS_COLUMNS].sort_values("scan_id").reset_index(drop=True)


def build_manifest(
    unchanged: dict[str, Any],
    probed: list[ProbedFile],
    outcomes: list[ScanOutcome],
    old_scan_of: dict[str, str],
    old_quarantine: pd.DataFrame,
    scans: pd.DataFrame,
    skipped: list[SkippedEntry],
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """Build the manifest (without status) and every quarantine row except ``unlabeled`` ones.

    Every file that belongs to a scan identity keeps its ``scan_id``, also when it is quarantined
    (a duplicate copy, an undecodable slice, a series rejected as a whole), so that a later change
    to that scan re-reads all its files.
    """
    scan_of = {p: sid for p, sid in old_scan_of.items() if p in unchanged}
    rejected = scans[scans["quarantine_reason"].notna()].set_index("scan_id")
    file_rows = [  # files of clean scans keep their rows; unlabeled rows are recomputed from the labels
        (r.source_path, r.reason, r.detail)
        for r in old_quarantine.itertuples(index=False)
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
        for path, sid in zip(manifest["source_path"], manifest["scan_id"], strict=True)
        if sid in rejected.index and path not in has_row
    ]
    return manifest.sort_values("source_path").reset_index(drop=True), file_rows


def quarantine_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """One row per source path: the first reason given wins (file-level reasons come first)."""
    frame = pd.DataFrame(rows, columns=["source_path", "reason", "detail"]).drop_duplicates("source_path")
    return frame.sort_values("source_path").reset_index(drop=True)


def unlabeled_rows(manifest: pd.DataFrame, scan_ids: list[str]) -> list[tuple[str, str, str]]:
    wanted = set(scan_ids)
    return [
        (path, QuarantineReason.UNLABELED.value, "labelled run, but no row of the labels file matches this scan")
        for path, scan_id in zip(manifest["source_path"], manifest["scan_id"], strict=True)
        if scan_id in wanted
    ]
