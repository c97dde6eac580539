"""Watching an inbox folder for complete new studies.

An *inbox study* is one top-level folder of the inbox (what a PACS or modality export writes: one
folder per study, any layout inside). It is **complete** when its file list (relative paths, sizes,
mtimes) has not changed for ``stable_seconds``, counted from when the poller first saw that list,
so a copy that preserves old mtimes still has to sit still for the whole interval. A complete
study is **ready** unless it was already handed out with the same file list: a study is requested
once; if files are later added to its folder it is requested again and the scoring run only does
the new work.

Studies are named by keyed pseudonyms of their folder names (``inbox_<16 hex>``), because folder
names often carry a patient's name or accession number. The poller keeps its memory in a
JSON-serialisable ``state`` (the Dagster sensor's cursor).

>>> import tempfile, pathlib
>>> from pipeline.deid import Pseudonymizer
>>> inbox = pathlib.Path(tempfile.mkdtemp())
>>> (inbox / "study A").mkdir(); _ = (inbox / "study A" / "1.dcm").write_bytes(b"x")
>>> names = Pseudonymizer(b"key")
>>> first = poll_inbox(inbox, {}, now=100.0, stable_seconds=30, pseudonymizer=names)
>>> first.ready, first.waiting
([], 1)
>>> second = poll_inbox(inbox, first.state, now=131.0, stable_seconds=30, pseudonymizer=names)
>>> [d.key for d in second.ready] == [names.inbox("study A")]
True
>>> poll_inbox(inbox, second.state, now=200.0, stable_seconds=30, pseudonymizer=names).ready
[]
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError


@dataclass(frozen=True)
class InboxStudy:
    """A complete inbox study: its pseudonymous key, its folder, and a digest of its file list."""

    key: str
    folder: Path
    digest: str
    n_files: int

    @property
    def run_key(self) -> str:
        """Unique per (study, file list): Dagster never launches two runs with one run key."""
        return f"{self.key}:{self.digest[:16]}"


@dataclass
class InboxPoll:
    """What one poll found: studies ready to score, how many still wait, the new state."""

    ready: list[InboxStudy]
    waiting: int
    loose_files: int  # files directly in the inbox, outside any study folder (not scored)
    state: dict[str, Any] = field(default_factory=dict)


def _listing(folder: Path) -> tuple[str, int, int]:
    """SHA-256 over the sorted (relative path, size, mtime_ns) of every file below ``folder``, the
    number of files and the newest mtime (ns)."""
    entries, newest = [], 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed between listing and stat: the next poll sees the change
                continue
            entries.append(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}")
            newest = max(newest, stat.st_mtime_ns)
    return hashlib.sha256("\n".join(entries).encode()).hexdigest(), len(entries), newest


def _study_folders(inbox: Path) -> tuple[list[Path], int]:
    """The inbox's study folders (hidden entries, a transfer tool's temporary ones, are skipped) and
    the number of loose files lying directly in it."""
    if not inbox.is_dir():
        raise UserInputError(f"inbox folder does not exist: {inbox}")
    entries = [e for e in sorted(inbox.iterdir()) if not e.name.startswith(".")]
    folders = [e for e in entries if e.is_dir()]
    return folders, len(entries) - len(folders)


def poll_inbox(
    inbox: Path,
    state: dict[str, Any],
    now: float,
    stable_seconds: float,
    pseudonymizer: Pseudonymizer,
) -> InboxPoll:
    """Compare the inbox with ``state`` at time ``now`` (seconds, any clock that only moves forward).

    ``state`` is not modified; the returned ``InboxPoll.state`` replaces it. A study in ``ready`` is
    marked requested in the new state, so the next poll does not return it again.
    """
    folders, loose = _study_folders(inbox)
    seen: dict[str, dict[str, Any]] = dict(state.get("seen", {}))
    requested: dict[str, str] = dict(state.get("requested", {}))
    ready, waiting, present = [], 0, set()
    for entry in folders:
        key = pseudonymizer.inbox(entry.name)
        present.add(key)
        digest, n_files, _ = _listing(entry)
        if n_files == 0:
            waiting += 1
            continue
        if seen.get(key, {}).get("digest") != digest:
            seen[key] = {"digest": digest, "since": now}
        if requested.get(key) == digest:
            continue
        if now - float(seen[key]["since"]) >= stable_seconds:
            ready.append(InboxStudy(key, entry, digest, n_files))
            requested[key] = digest
        else:
            waiting += 1
    seen = {k: v for k, v in seen.items() if k in present}  # forget folders that left the inbox
    return InboxPoll(ready, waiting, loose, {"seen": seen, "requested": requested})


def settled_studies(inbox: Path, pseudonymizer: Pseudonymizer, now: float, min_age_seconds: float) -> InboxPoll:
    """Without memory (the CLI): every study folder whose newest file is at least ``min_age_seconds``
    old (``now`` in seconds since the epoch); younger ones count as ``waiting``."""
    folders, loose = _study_folders(inbox)
    ready, waiting = [], 0
    for entry in folders:
        digest, n_files, newest = _listing(entry)
        if n_files and now - newest / 1e9 >= min_age_seconds:
            ready.append(InboxStudy(pseudonymizer.inbox(entry.name), entry, digest, n_files))
        else:
            waiting += 1
    return InboxPoll(ready, waiting, loose)


def find_study(inbox: Path, key: str, pseudonymizer: Pseudonymizer) -> Path:
    """The inbox folder whose pseudonym is ``key`` (a clear error when it is gone)."""
    if inbox.is_dir():
        for entry in sorted(inbox.iterdir()):
            if entry.is_dir() and pseudonymizer.inbox(entry.name) == key:
                return entry
    raise UserInputError(f"no folder of the inbox {inbox} has the pseudonym {key} (moved or removed?)")
