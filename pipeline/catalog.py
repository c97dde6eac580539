"""The three public ingest tables and how labels join the scans.

* ``catalog.parquet``: one row per usable scan (pseudonymous ids only; see :data:`CATALOG_COLUMNS`).
* ``quarantine.parquet``: one row per source file that is not part of a catalogued scan,
  with a snake_case ``reason`` and a human ``detail``.
* ``ingest_manifest.parquet``: every source file with size, mtime, SHA-256 and its ``scan_id``.

Only the last two hold source paths (relative to SRC): they are the data steward's link back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa

from pipeline.deid import Pseudonymizer
from pipeline.errors import QuarantineReason, UserInputError

CATALOG_COLUMNS = [
    "scan_id", "patient_id", "study_id", "series_id", "modality", "manufacturer", "manufacturer_model",
    "body_part", "dims", "shape", "spacing_mm", "slice_thickness_mm", "n_source_files", "volume_path",
    "content_hash", "label", "split", "status", "warnings",
]
DEMOGRAPHIC_COLUMNS = ["patient_sex", "patient_age"]

CATALOG_SCHEMA_FIELDS = [
    ("scan_id", pa.string()), ("patient_id", pa.string()), ("study_id", pa.string()), ("series_id", pa.string()),
    ("modality", pa.string()), ("manufacturer", pa.string()), ("manufacturer_model", pa.string()),
    ("body_part", pa.string()), ("dims", pa.int8()), ("shape", pa.list_(pa.int32())),
    ("spacing_mm", pa.list_(pa.float64())), ("slice_thickness_mm", pa.float64()), ("n_source_files", pa.int32()),
    ("volume_path", pa.string()), ("content_hash", pa.string()), ("label", pa.int64()), ("split", pa.string()),
    ("status", pa.string()), ("warnings", pa.list_(pa.string())),
]
QUARANTINE_SCHEMA = pa.schema([("source_path", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
MANIFEST_SCHEMA = pa.schema([
    ("source_path", pa.string()), ("size_bytes", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string()),
    ("scan_id", pa.string()), ("status", pa.string()),
])
#: Internal per-scan table (``W/.scanlens/scans.parquet``): the catalogue columns before labels, plus
#: ``quarantine_reason``/``quarantine_detail`` for scans rejected as a whole. No source paths.
SCANS_COLUMNS = [c for c in CATALOG_COLUMNS if c not in ("label", "split")] + DEMOGRAPHIC_COLUMNS + [
    "quarantine_reason", "quarantine_detail",
]


def catalog_schema(keep_demographics: bool) -> pa.Schema:
    fields = list(CATALOG_SCHEMA_FIELDS)
    if keep_demographics:
        fields += [("patient_sex", pa.string()), ("patient_age", pa.string())]
    return pa.schema(fields)


@dataclass
class JoinedTables:
    catalog: pd.DataFrame
    unlabeled_scan_ids: list[str] = field(default_factory=list)
    unmatched_label_lines: list[int] = field(default_factory=list)


def normalise_ref(ref: str) -> str:
    """Normalise a path-like reference to the manifest's form (POSIX, relative, no ``./``)."""
    return str(PurePosixPath(ref.replace("\\", "/"))).lstrip("/") if ref else ref


def join_labels(
    scans: pd.DataFrame,
    manifest: pd.DataFrame,
    labels: pd.DataFrame | None,
    pseudonymizer: Pseudonymizer,
    keep_demographics: bool,
) -> JoinedTables:
    """Attach ``label``/``split`` to usable scans and fill missing patient pseudonyms.

    A ``scan_ref`` matches a scan through the manifest (a source path) or through its series
    (``series_id`` is the keyed pseudonym of the SeriesInstanceUID). In a labelled run, a usable
    scan that no row matches is reported in ``unlabeled_scan_ids`` and left out of the catalogue.
    """
    usable = scans[scans["quarantine_reason"].isna()].copy()
    usable["label"] = pd.array([None] * len(usable), dtype="Int64")
    usable["split"] = pd.Series([None] * len(usable), dtype=object, index=usable.index)
    label_patient: dict[str, str] = {}
    result = JoinedTables(catalog=usable)
    if labels is not None:
        by_path = dict(zip(manifest["source_path"], manifest["scan_id"]))
        known_series = set(scans["series_id"])
        usable_by_series = usable.groupby("series_id")["scan_id"].apply(list).to_dict()
        assigned: dict[str, tuple[int, object, object]] = {}  # scan_id -> (line, label, split)
        for row in labels.itertuples(index=False):
            ref = normalise_ref(row.scan_ref)
            if ref in by_path:
                targets = [by_path[ref]] if isinstance(by_path[ref], str) else []
            else:
                series = pseudonymizer.series(row.scan_ref)
                if series not in known_series:
                    result.unmatched_label_lines.append(int(row.line))
                    continue
                targets = usable_by_series.get(series, [])
            for scan_id in targets:
                if scan_id in assigned and assigned[scan_id][0] != row.line:
                    raise UserInputError(f"labels file: lines {assigned[scan_id][0]} and {row.line} both label one scan")
                assigned[scan_id] = (int(row.line), row.label, row.split)
                if row.patient_id:
                    label_patient[scan_id] = pseudonymizer.patient(row.patient_id)
        result.unlabeled_scan_ids = sorted(set(usable["scan_id"]) - set(assigned))
        usable = usable[usable["scan_id"].isin(assigned)].copy()
        usable["label"] = pd.array([assigned[s][1] for s in usable["scan_id"]], dtype="Int64")
        usable["split"] = [assigned[s][2] for s in usable["scan_id"]]
    patients = [
        pid if isinstance(pid, str) else label_patient.get(sid, pseudonymizer.patient(f"unknown-patient:{sid}"))
        for pid, sid in zip(usable["patient_id"], usable["scan_id"])
    ]
    usable["patient_id"] = patients
    columns = CATALOG_COLUMNS + (DEMOGRAPHIC_COLUMNS if keep_demographics else [])
    result.catalog = usable[columns].sort_values("scan_id").reset_index(drop=True)
    return result


def quarantine_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """One row per source path: the first reason given wins (file-level reasons come first)."""
    frame = pd.DataFrame(rows, columns=["source_path", "reason", "detail"]).drop_duplicates("source_path")
    return frame.sort_values("source_path").reset_index(drop=True)


def unlabeled_rows(manifest: pd.DataFrame, scan_ids: list[str]) -> list[tuple[str, str, str]]:
    wanted = set(scan_ids)
    return [
        (path, QuarantineReason.UNLABELED.value, "labelled run, but no row of the labels file matches this scan")
        for path, scan_id in zip(manifest["source_path"], manifest["scan_id"])
        if scan_id in wanted
    ]
