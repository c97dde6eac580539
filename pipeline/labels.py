"""The labels file: which scan has which class, and which split it belongs to.

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
from pathlib import Path

import pandas as pd

from pipeline.errors import UserInputError

REQUIRED_COLUMNS = ("scan_ref", "label")
SPLITS = ("train", "val", "test")


def read_labels(path: Path) -> pd.DataFrame:
    """Read and validate a labels CSV; columns ``line, scan_ref, label, split, patient_id``.

    Raises :class:`UserInputError` for a missing file, missing columns, non-integer labels,
    unknown split names or contradictory rows for one scan.
    """
    if not path.is_file():
        raise UserInputError(f"labels file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    skipped = 0
    while skipped < len(lines) and lines[skipped].lstrip().startswith("#"):
        skipped += 1
    body = "\n".join(lines[skipped:])
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
        raise UserInputError(f"labels file {path.name}: label is not an integer class index on line(s) {_lines(bad_label)}")
    bad_split = frame[~frame["split"].isin(("",) + SPLITS)]
    if len(bad_split):
        raise UserInputError(
            f"labels file {path.name}: split must be one of {', '.join(SPLITS)} or empty, line(s) {_lines(bad_split)}"
        )
    frame["label"] = pd.array([int(v) if v else None for v in frame["label"]], dtype="Int64")
    for column in ("split", "patient_id"):
        frame[column] = pd.Series([v or None for v in frame[column]], dtype=object, index=frame.index)
    variants = frame.astype({"label": str, "split": str}).groupby("scan_ref")[["label", "split"]].nunique()
    conflicts = frame[frame["scan_ref"].isin(variants.index[(variants > 1).any(axis=1)])]
    if len(conflicts):
        raise UserInputError(f"labels file {path.name}: contradictory rows for one scan on line(s) {_lines(conflicts)}")
    return frame.drop_duplicates("scan_ref")[["line", "scan_ref", "label", "split", "patient_id"]].reset_index(drop=True)


def _lines(rows: pd.DataFrame, limit: int = 10) -> str:
    numbers = [str(n) for n in rows["line"].tolist()]
    return ", ".join(numbers[:limit]) + (f" (+{len(numbers) - limit} more)" if len(numbers) > limit else "")
