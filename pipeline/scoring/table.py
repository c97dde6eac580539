"""The scores table ``W/scoring/scores.parquet``: a folder of Parquet parts, one part per scoring call.

A scoring call that scores anything adds one part (``part-<stamp>.parquet``, written to a hidden
temp file and renamed into place) holding its rows; no part is ever rewritten, so scoring one study
writes O(its rows), however long the table has grown. ``pd.read_parquet(W/scoring/scores.parquet)``
reads every part (hidden temp files are skipped); :func:`read_scores` also sorts the rows by
``(scan_id, model_version)`` and drops the duplicates a merge leaves visible for a moment.

Appends hold ``W/scoring/.scores.lock`` (:func:`pipeline.storage.file_lock`): under it a writer
brings its view of the table up to date, keeps only the rows whose ``(scan_id, model_version)`` is
not there yet, writes its part and, once there are :data:`COMPACT_AT` parts, merges them into one
in write order (written before the merged parts are removed, so a reader never misses a row, and
``read_scores(W, write_order=True)`` still gives the most recent scores last). Concurrent scoring
runs take turns and lose no row, and a scan is in the table once per model version.

A :class:`ScoresTable` remembers the key columns of the parts it has read: asking it what a champion
has scored reads only the parts added since (a long-running scorer reads O(new rows) per study, not
O(table)), and the check itself is a vectorised scan of those columns.

A table written by an older ScanLens (one Parquet file at the same path) becomes the first part of
the folder on the first append; until then it is read as it is. Rows written before calibration and
referral (no ``raw_probability``, ``uncertainty``, ``refer_reason``, ``ood_*`` columns, a class label
as decision) read with defaults (:func:`_normalise`); a merge rewrites them in the current schema.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.layout import Workdir
from pipeline.storage import atomic_write_bytes, file_lock, parquet_bytes

log = logging.getLogger(__name__)

SCORE_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("probability", pa.float64()),  # calibrated: the mean of the fold members' calibrated probabilities
        ("raw_probability", pa.float64()),  # the mean of the members' uncalibrated probabilities
        ("uncertainty", pa.float64()),  # std (ddof 0) of the members' calibrated probabilities
        ("decision", pa.string()),  # positive | negative | refer
        ("refer_reason", pa.string()),  # "" unless referred; several reasons joined by "; "
        ("ood_score", pa.float64()),  # NaN without an out-of-distribution check
        ("ood_flags", pa.string()),  # comma-joined flag names, "" when none
        ("threshold", pa.float64()),  # on the calibrated scale
        ("model_version", pa.string()),
    ]
)
SCORE_COLUMNS = SCORE_SCHEMA.names
#: Decisions of a table before calibration and referral (the called class): translated on reading.
DECISIONS = ("positive", "negative", "refer")
KEY = ["scan_id", "model_version"]
KEY_SCHEMA = pa.schema([("scan_id", pa.string()), ("model_version", pa.string())])
#: Parts that trigger a merge into one: bounds the files a fresh reader opens; each append then
#: costs O(its rows) plus, once in COMPACT_AT appends, one O(table) merge.
COMPACT_AT = 64
#: Stamp of the part an older single-file table becomes: it sorts before every later part.
LEGACY_STAMP = "0" * 20 + "-legacy"
READ_ATTEMPTS = 3  # a part can vanish between listing and reading while a merge removes it


@dataclass(frozen=True)
class _Part:
    path: Path
    mtime_ns: int
    size: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path.name, self.mtime_ns, self.size)


class ScoresTable:
    """The scores table of one work folder; see the module docstring. Not shared between threads."""

    def __init__(self, workdir: Path) -> None:
        self.files = Workdir(Path(workdir))
        self._keys: dict[tuple[str, int, int], pa.Table] = {}  # part -> its (scan_id, model_version) columns

    @property
    def path(self) -> Path:
        return self.files.scores

    def _parts(self) -> list[_Part]:
        """What a reader sees now, in write order: the parts (or an older ScanLens's single file)."""
        path = self.path
        try:
            entries = sorted(
                (e for e in os.scandir(path) if e.name.endswith(".parquet") and not e.name.startswith((".", "_"))),
                key=lambda e: e.name,
            )
        except NotADirectoryError:  # an older single-file table
            stat = path.stat()
            return [_Part(path, stat.st_mtime_ns, stat.st_size)]
        except FileNotFoundError:
            entries = []
        parts = []
        for entry in entries:
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed by a merge since the listing
                continue
            parts.append(_Part(Path(entry.path), stat.st_mtime_ns, stat.st_size))
        if not parts and self.files.scores_migrating.is_file():  # a migration was interrupted
            stat = self.files.scores_migrating.stat()
            parts = [_Part(self.files.scores_migrating, stat.st_mtime_ns, stat.st_size)]
        return parts

    def _refresh(self) -> list[_Part]:
        """Bring the remembered keys up to date, reading only parts not read before."""
        for _ in range(READ_ATTEMPTS):
            parts = self._parts()
            try:
                for part in parts:
                    if part.key not in self._keys:
                        self._keys[part.key] = pq.read_table(part.path, columns=KEY).cast(KEY_SCHEMA)
            except FileNotFoundError:
                continue
            current = {p.key for p in parts}
            for gone in [k for k in self._keys if k not in current]:
                del self._keys[gone]
            return parts
        raise OSError(f"the scores table {self.path} kept changing while it was read")

    def scored(self, version: str, scan_ids: Iterable[str]) -> set[str]:
        """Those of ``scan_ids`` that model ``version`` has scored (reads only the parts added since the
        last call; the check itself is a vectorised scan of the remembered key columns)."""
        self._refresh()
        return self._found(version, list(scan_ids))

    def _found(self, version: str, scan_ids: list[str]) -> set[str]:
        if not scan_ids:
            return set()
        wanted = pa.array(scan_ids, pa.string())
        found: set[str] = set()
        for keys in self._keys.values():
            mask = pc.and_(pc.equal(keys["model_version"], version), pc.is_in(keys["scan_id"], value_set=wanted))
            found.update(pc.filter(keys["scan_id"], mask).to_pylist())
        return found

    def read(self) -> pd.DataFrame:
        """Every row, one per ``(scan_id, model_version)`` (the last written), sorted by that key."""
        return read_scores(self.files.root)

    def append(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Add ``rows`` (:data:`SCORE_COLUMNS`) as one part; returns those written: rows whose
        ``(scan_id, model_version)`` another run wrote first are left out."""
        with file_lock(self.files.scores_lock):
            self._migrate()
            parts = self._refresh()
            keys = list(zip(rows["scan_id"], rows["model_version"], strict=True))
            present = set()
            for version in {v for _, v in keys}:
                present |= {(s, version) for s in self._found(version, [s for s, v in keys if v == version])}
            keep = [k not in present for k in keys]
            fresh = rows[keep] if not all(keep) else rows
            if len(set(keys)) < len(keys):  # the same scan twice in one call: the last row counts
                fresh = fresh.drop_duplicates(KEY, keep="last")
            if fresh.empty:
                return fresh
            frame = _normalise(fresh)
            part = self.files.scores_part(_stamp())
            atomic_write_bytes(part, parquet_bytes(frame, SCORE_SCHEMA))
            stat = part.stat()  # remembered as written: the next check need not read it back
            self._keys[_Part(part, stat.st_mtime_ns, stat.st_size).key] = pa.table(
                {k: pa.array(frame[k].tolist(), pa.string()) for k in KEY}
            )
            if len(parts) + 1 >= COMPACT_AT:
                self._compact()
            return fresh

    def _migrate(self) -> None:
        """An older single-file table becomes the folder's first part (call under the lock).

        Steps: rename the file aside (:attr:`Workdir.scores_migrating`), create the folder, write the
        part, remove the file aside. Each step can be interrupted: the file aside is read until its
        part exists, and the next append finishes the job.
        """
        files = self.files
        aside = files.scores_migrating
        if files.scores.is_file():
            os.replace(files.scores, aside)
        if not aside.is_file():
            return
        if not any(p.path.parent == files.scores for p in self._parts()):
            legacy = pd.read_parquet(aside)
            atomic_write_bytes(files.scores_part(LEGACY_STAMP), parquet_bytes(_normalise(legacy), SCORE_SCHEMA))
            log.info("scores table: the single-file table of an older ScanLens is now the first part")
        aside.unlink()

    def _compact(self) -> None:
        """Merge every part into one (call under the lock): the merged part first, then the old ones go."""
        parts = self._refresh()
        merged = _dedupe(pd.concat([pd.read_parquet(p.path) for p in parts], ignore_index=True), sort=False)
        atomic_write_bytes(self.files.scores_part(_stamp()), parquet_bytes(merged, SCORE_SCHEMA))
        for part in parts:
            part.path.unlink(missing_ok=True)
        self._refresh()
        log.info("scores table: merged %d parts into one (%d rows)", len(parts), len(merged))


def read_scores(workdir: Path, *, write_order: bool = False) -> pd.DataFrame:
    """The scores table of ``workdir``: one row per ``(scan_id, model_version)``, sorted; empty when
    nothing was scored yet. With ``write_order`` the rows keep the order they were appended in, oldest
    first (merges keep it; only a part merged by an earlier ScanLens is ordered by key inside)."""
    table = ScoresTable(workdir)
    for _ in range(READ_ATTEMPTS):
        parts = table._parts()
        try:
            frames = [pd.read_parquet(p.path) for p in parts]
        except FileNotFoundError:  # a merge removed a part since the listing: list again
            continue
        if not frames:
            return SCORE_SCHEMA.empty_table().to_pandas()
        return _dedupe(pd.concat(frames, ignore_index=True), sort=not write_order)
    raise OSError(f"the scores table {table.path} kept changing while it was read")


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly :data:`SCORE_COLUMNS`; rows of an older table (written before calibration,
    uncertainty and referral) get the defaults: ``raw_probability`` = ``probability`` (it was
    uncalibrated), NaN ``uncertainty`` and ``ood_score``, empty ``refer_reason`` and ``ood_flags``, and
    their decision (the class called) becomes ``positive`` or ``negative`` by ``probability >= threshold``,
    the rule that made it."""
    frame = frame.copy()
    for name, default in (("raw_probability", np.nan), ("uncertainty", np.nan), ("ood_score", np.nan)):
        if name not in frame:
            frame[name] = default
    for name in ("refer_reason", "ood_flags"):
        frame[name] = frame[name].fillna("") if name in frame else ""
    frame["raw_probability"] = frame["raw_probability"].fillna(frame["probability"])
    old = ~frame["decision"].isin(DECISIONS)
    if old.any():
        called = np.where(frame["probability"] >= frame["threshold"], "positive", "negative")
        frame.loc[old, "decision"] = called[old.to_numpy()]
    return frame[SCORE_COLUMNS].reset_index(drop=True)


def _dedupe(frame: pd.DataFrame, sort: bool = True) -> pd.DataFrame:
    """The last row of each ``(scan_id, model_version)``, sorted by it, or with ``sort`` False in write
    order (parts are concatenated in write order; a kept row stays where it was last written)."""
    unique = frame.drop_duplicates(KEY, keep="last")
    return _normalise(unique.sort_values(KEY) if sort else unique)


def _stamp() -> str:
    """A part's stamp: nanoseconds since the epoch (parts sort in write order), plus a random tail."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"
