"""What a source folder holds: the regular files to read, and every entry that is never opened, with why.

Nothing outside SRC is ever read unless asked for: see :func:`walk_source` for the link policy.
Paths are relative to SRC, POSIX style (the manifest's ``source_path``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import QuarantineReason


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of SRC that is never opened: a link that leaves SRC or dangles, a folder link, a FIFO."""

    relpath: str
    size: int
    mtime_ns: int
    reason: QuarantineReason
    detail: str


def walk_source(
    source: Path,
    exclude: Path,
    skip_file: Path | None,
    follow_external_links: bool = False,
) -> tuple[list[tuple[str, int, int]], list[SkippedEntry]]:
    """List (relative POSIX path, size, mtime_ns) of every regular file under ``source``, sorted, without
    W or the labels file, and every entry that will not be read, with its reason.

    Symbolic links: a file link whose target is inside SRC is read through the link; one whose target
    is outside SRC is ``outside_source`` (unless ``follow_external_links``); a dangling one is
    ``broken_link``. Folder links are never followed: inside SRC their files are read where they
    are (``directory_link``), outside SRC they are ``outside_source``.
    """
    files: list[tuple[str, int, int]] = []
    skipped: list[SkippedEntry] = []
    for folder, dirs, names in os.walk(source):
        here = Path(folder)
        kept = []
        for name in sorted(dirs):
            path = here / name
            if path.is_symlink():
                entry = _link_entry(path, source, directory=True)
                assert isinstance(entry, SkippedEntry)  # folder links are never followed
                skipped.append(entry)
            elif path.resolve() != exclude:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            path = here / name
            relpath = path.relative_to(source).as_posix()
            try:
                info = path.lstat()
            except OSError as exc:
                skipped.append(
                    SkippedEntry(
                        relpath, 0, 0, QuarantineReason.UNREADABLE_FILE, f"cannot be listed ({type(exc).__name__})"
                    )
                )
                continue
            if stat.S_ISLNK(info.st_mode):
                entry = _link_entry(path, source, directory=False, follow_external=follow_external_links)
                if isinstance(entry, SkippedEntry):
                    skipped.append(entry)
                    continue
                info = entry
            elif not stat.S_ISREG(info.st_mode):
                skipped.append(
                    SkippedEntry(
                        relpath,
                        0,
                        info.st_mtime_ns,
                        QuarantineReason.NOT_REGULAR_FILE,
                        "not a regular file (a FIFO, socket or device); never opened",
                    )
                )
                continue
            if skip_file is None or path.resolve() != skip_file:
                files.append((relpath, info.st_size, info.st_mtime_ns))
    return files, sorted(skipped, key=lambda s: s.relpath)


def _link_entry(
    path: Path, source: Path, directory: bool, follow_external: bool = False
) -> SkippedEntry | os.stat_result:
    """What to do with a symbolic link: the target's stat when it is to be read, else why not."""
    relpath = path.relative_to(source).as_posix()
    own = path.lstat()
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        return SkippedEntry(
            relpath,
            own.st_size,
            own.st_mtime_ns,
            QuarantineReason.BROKEN_LINK,
            "symbolic link whose target does not exist",
        )
    inside = target.is_relative_to(source)
    if directory:
        if inside:
            return SkippedEntry(
                relpath,
                own.st_size,
                own.st_mtime_ns,
                QuarantineReason.DIRECTORY_LINK,
                "link to a folder inside the source folder: not followed (its files are read where they are)",
            )
        return SkippedEntry(
            relpath,
            own.st_size,
            own.st_mtime_ns,
            QuarantineReason.OUTSIDE_SOURCE,
            "link to a folder outside the source folder: never followed",
        )
    if not inside and not follow_external:
        return SkippedEntry(
            relpath,
            own.st_size,
            own.st_mtime_ns,
            QuarantineReason.OUTSIDE_SOURCE,
            "symbolic link to a file outside the source folder: not followed (see --follow-external-links)",
        )
    info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        return SkippedEntry(
            relpath,
            own.st_size,
            own.st_mtime_ns,
            QuarantineReason.NOT_REGULAR_FILE,
            "symbolic link to something that is not a regular file; never opened",
        )
    return info
