"""The labels file: which scan has which class and split, and how its rows join the scans.

Format: CSV with a header row. Leading lines starting with ``#`` are comments (``import-medmnist``
documents the columns there). Columns:

* ``scan_ref`` (required): a SeriesInstanceUID, or a file path relative to SRC;
* ``label`` (required): integer class index; empty means "known scan, label unknown";
* ``split`` (optional): ``train``, ``val``, ``test`` or empty;
* ``patient_id`` (optional): used as the patient for sources without one (NIfTI).

>>> import io, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
>>> _ = p.write_text("# comment\\nscan_ref,label,split\\n1.2.3,1,train\\n")
>>> read_labels(p)[["scan_ref", "label", "split"]].values.tolist()
[['1.2.3', 1, 'train']]
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.ingest.tables import CATALOG_COLUMNS, DEMOGRAPHIC_COLUMNS

REQUIRED_COLUMNS = ("scan_ref", "label")
SPLITS = ("train", "val", "test")


def commented_csv(path: Path, what: str) -> tuple[str, int]:
    """The text of the CSV file ``path`` after its leading ``#`` comment lines, and how many there were
    (so that line numbers in messages are the file's). A missing file is a :class:`UserInputError`
    naming ``what``."""
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    skipped = 0
    while skipped < len(lines) and lines[skipped].lstrip().startswith("#"):
        skipped += 1
    return "\n".join(lines[skipped:]), skipped


def read_labels(path: Path) -> pd.DataFrame:
    """Read and validate a labels CSV; columns ``line, scan_ref, label, split, patient_id``.

    Raises :class:`UserInputError` for a missing file, missing columns, non-integer labels,
    unknown split names or contradictory rows for one scan.
    """
    body, skipped = commented_csv(path, "labels file")
    if not body.strip():
        raise UserInputError(f"labels file is empty: {path}")
    frame = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserInputError(
            f"labels file {path.name} lacks required column(s) {', '.join(missing)}; it has: {', '.join(frame.columns)}"
        )
    frame["line"] = range(skipped + 2, skipped + 2 + len(frame))
    for column in ("split", "patient_id"):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.assign(**{c: frame[c].str.strip() for c in ("scan_ref", "label", "split", "patient_id")})
    empty_ref = frame[frame["scan_ref"] == ""]
    if len(empty_ref):
        raise UserInputError(f"labels file {path.name}: empty scan_ref on line(s) {_lines(empty_ref)}")
    bad_label = frame[(frame["label"] != "") & ~frame["label"].str.fullmatch(r"-?\d+")]
    if len(bad_label):
        raise UserInputError(
            f"labels file {path.name}: label is not an integer class index on line(s) {_lines(bad_label)}"
        )
    bad_split = frame[~frame["split"].isin(("", *SPLITS))]
    if len(bad_split):
        raise UserInputError(
            f"labels file {path.name}: split must be one of {', '.join(SPLITS)} or empty, line(s) {_lines(bad_split)}"
        )
    frame["label"] = pd.array([int(v) if v else None for v in frame["label"]], dtype="Int64")
    for column in ("split", "patient_id"):
        frame[column] = pd.Series([v or None for v in frame[column]], dtype=object, index=frame.index)
    variants = frame.groupby("scan_ref")[["label", "split"]].nunique(dropna=False)  # an empty value counts too
    conflicts = frame[frame["scan_ref"].isin(variants.index[(variants > 1).any(axis=1)])]
    if len(conflicts):
        raise UserInputError(f"labels file {path.name}: contradictory rows for one scan on line(s) {_lines(conflicts)}")
    return frame.drop_duplicates("scan_ref")[["line", "scan_ref", "label", "split", "patient_id"]].reset_index(
        drop=True
    )


def _lines(rows: pd.DataFrame, limit: int = 10) -> str:
    numbers = [str(n) for n in rows["line"].tolist()]
    return ", ".join(numbers[:limit]) + (f" (+{len(numbers) - limit} more)" if len(numbers) > limit else "")


@dataclass
class JoinedTables:
    """The catalogue with labels joined, and what the join could not match (line numbers, scan ids)."""

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
        by_path = dict(zip(manifest["source_path"], manifest["scan_id"], strict=True))
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
                    raise UserInputError(
                        f"labels file: lines {assigned[scan_id][0]} and {row.line} both label one scan"
                    )
                assigned[scan_id] = (int(row.line), row.label, row.split)
                if row.patient_id:
                    label_patient[scan_id] = pseudonymizer.patient(row.patient_id)
        result.unlabeled_scan_ids = sorted(set(usable["scan_id"]) - set(assigned))
        usable = usable[usable["scan_id"].isin(assigned)].copy()
        usable["label"] = pd.array([assigned[s][1] for s in usable["scan_id"]], dtype="Int64")
        usable["split"] = [assigned[s][2] for s in usable["scan_id"]]
    patients = [
        pid if isinstance(pid, str) else label_patient.get(sid, pseudonymizer.patient(f"unknown-patient:{sid}"))
        for pid, sid in zip(usable["patient_id"], usable["scan_id"], strict=True)
    ]
    usable["patient_id"] = patients
    columns = CATALOG_COLUMNS + (DEMOGRAPHIC_COLUMNS if keep_demographics else [])
    result.catalog = usable[columns].sort_values("scan_id").reset_index(drop=True)
    return result
