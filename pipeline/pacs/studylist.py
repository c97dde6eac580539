"""The study list of ``scanlens fetch --studies CSV``, and the labels file it writes for ingest.

The CSV has a header row and a ``StudyInstanceUID`` column; leading lines starting with ``#`` are
comments. With a ``label`` column (and optionally ``split`` and ``patient_id``, as in the labels file
of :mod:`pipeline.ingest.labels`), ``fetch`` writes ``OUT/labels.csv`` for the studies it retrieved
completely: one row per series of the study (``scan_ref`` is the SeriesInstanceUID; every series of a
study gets the study's label), so ``scanlens ingest OUT --labels OUT/labels.csv`` catalogues a labelled
training set. Rows already in that file for other series are kept.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "studies.csv"
>>> _ = p.write_text("# cohort A\\nStudyInstanceUID,label\\n1.2.3,1\\n1.2.4,0\\n")
>>> [(r.uid, r.label) for r in read_study_list(p)]
[('1.2.3', '1'), ('1.2.4', '0')]
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import UserInputError
from pipeline.ingest.labels import SPLITS, commented_csv, read_labels
from pipeline.storage import atomic_write_bytes

UID_COLUMN = "StudyInstanceUID"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str, where: str) -> str:
    """``uid`` when it is a DICOM UID (digits and dots, at most 64 characters), else a one-line error
    naming ``where`` (not the value)."""
    uid = uid.strip()
    if not _UID.match(uid) or len(uid) > 64:
        raise UserInputError(f"not a DICOM UID (digits and dots, at most 64 characters): {where}")
    return uid


@dataclass(frozen=True)
class StudyRow:
    """One study of the list: its UID (in memory only) and, when the list has them, label columns."""

    uid: str = field(repr=False)
    label: str | None = None
    split: str = ""
    patient_id: str = field(default="", repr=False)


def read_study_list(path: Path) -> list[StudyRow]:
    """The studies of ``path`` in file order (duplicates once), or a one-line :class:`UserInputError`."""
    body, skipped = commented_csv(path, "study list")
    reader = csv.DictReader(io.StringIO(body))
    columns = [c.strip() for c in reader.fieldnames or []]
    if UID_COLUMN not in columns:
        raise UserInputError(f"study list {path.name} lacks the column {UID_COLUMN}; it has: {', '.join(columns)}")
    labelled = "label" in columns
    rows: dict[str, StudyRow] = {}
    for number, raw in enumerate(reader, start=skipped + 2):
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        uid = check_uid(record[UID_COLUMN], f"{path.name} line {number}")
        label, split = record.get("label", ""), record.get("split", "")
        if label and not re.fullmatch(r"-?\d+", label):
            raise UserInputError(f"study list {path.name}: label is not an integer class index on line {number}")
        if split not in ("", *SPLITS):
            raise UserInputError(
                f"study list {path.name}: split must be one of {', '.join(SPLITS)} or empty, line {number}"
            )
        row = StudyRow(uid, label if labelled else None, split, record.get("patient_id", ""))
        if uid in rows and rows[uid] != row:
            raise UserInputError(f"study list {path.name}: contradictory rows for one study (line {number})")
        rows[uid] = row
    if not rows:
        raise UserInputError(f"study list {path.name} lists no study")
    return list(rows.values())


_HEADER = (
    "# written by scanlens fetch: one row per series of each study retrieved completely\n"
    "# scan_ref = SeriesInstanceUID; label, split, patient_id from the study list\n"
)


def write_labels(path: Path, series_rows: dict[str, StudyRow]) -> int:
    """Write (atomically) the labels file ``path``: ``series_rows`` (SeriesInstanceUID -> its study's row)
    plus the rows already in ``path`` for other series. Returns the number of rows written."""
    rows: dict[str, tuple[str, str, str]] = {}
    if path.is_file():
        for old in read_labels(path).itertuples(index=False):
            label = "" if pd.isna(old.label) else str(old.label)
            rows[str(old.scan_ref)] = (label, old.split or "", old.patient_id or "")
    for series_uid, study in series_rows.items():
        rows[series_uid] = (study.label or "", study.split, study.patient_id)
    out = io.StringIO()
    out.write(_HEADER)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scan_ref", "label", "split", "patient_id"])
    for ref in sorted(rows):
        writer.writerow([ref, *rows[ref]])
    atomic_write_bytes(path, out.getvalue().encode())
    return len(rows)
