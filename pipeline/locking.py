"""One writer at a time per work folder: the lock file ``W/.scanlens/lock``.

Every step that writes into a work folder (ingest, preprocessing caches, training, evaluation,
explanations, reports, the registry, scoring) holds :func:`workdir_lock` while it writes. A second
writer waits up to ``SCANLENS_LOCK_TIMEOUT`` seconds (default 600; ``scanlens --lock-timeout``; in
Dagster the ``project`` resource's ``lock_timeout_s``, default 4 hours, so that runs take turns),
then fails with :class:`WorkdirBusyError`: exit 2 and one line on the command line, a failed step
with that line in the Dagster UI.

The lock is a POSIX record lock (``fcntl.lockf``) on that file. The kernel releases it when its
holder exits, however it exits (``kill -9`` included), so a crashed run never blocks the next one.
The file stays and holds the last holder's PID, host, purpose and start time (JSON). A file whose
PID is gone (on this host) when the lock is taken is a *stale lock*: a run ended without releasing
it. The new holder logs that, and every holder that takes the lock first removes what a crashed
writer can leave behind: temp files of :func:`pipeline.storage.atomic_write`
(``.<name>.<16 hex>.tmp*``) and the registry's staging folders (``.<version>.partial``).

The lock is re-entrant within a process (``evaluate`` trains, training preprocesses) and excludes
other threads of the same process; it is not shared with child processes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

from pipeline.errors import WorkdirBusyError
from pipeline.layout import Workdir

log = logging.getLogger(__name__)

TIMEOUT_ENV = "SCANLENS_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: What a crashed writer can leave: atomic_write's temp files and the registry's staging folders.
TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp(\..+)?$")
STAGING_DIR = re.compile(r"^\..+\.partial$")
#: How long a waiter looks for the holder's record before it says only that the folder is in use.
ANNOUNCE_AFTER_S = 2.0
POLL_S = 0.2

P = ParamSpec("P")
R = TypeVar("R")

_held: dict[Path, int] = {}  # lock file -> depth, in this process
_threads: dict[Path, threading.RLock] = {}
_guard = threading.Lock()
_swept: set[Path] = set()  # work folders this process has already cleaned up after crashed writers


_timeout_override: float | None = None


def lock_timeout() -> float:
    """Seconds a writer waits for a busy work folder: :func:`set_lock_timeout`'s value, else
    ``$SCANLENS_LOCK_TIMEOUT`` (read now), else 600."""
    if _timeout_override is not None:
        return _timeout_override
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


def set_lock_timeout(seconds: float | None) -> None:
    """Set the wait of every later :func:`workdir_lock` in this process (``None``: back to the environment)."""
    global _timeout_override
    _timeout_override = None if seconds is None else max(0.0, float(seconds))


def lock_path(workdir: Path) -> Path:
    return Workdir(Path(workdir).resolve()).lock_file


def _holder(fd: int) -> dict[str, object]:
    try:
        return dict(json.loads(os.pread(fd, 4096, 0).decode() or "{}"))
    except (OSError, ValueError):
        return {}


def _pid_alive(holder: dict[str, object]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") not in (None, socket.gethostname()):
        return True  # another host's process cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another ScanLens writer"
    return f"PID {holder.get('pid')} ({holder.get('purpose')}, since {holder.get('since')})"


@contextmanager
def workdir_lock(workdir: Path, purpose: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the work folder's writer lock for the block; see the module docstring.

    ``timeout`` (seconds) defaults to :func:`lock_timeout`. Raises :class:`WorkdirBusyError` when
    another process holds the lock for longer than that.
    """
    path = lock_path(workdir)
    wait = lock_timeout() if timeout is None else max(0.0, timeout)
    with _guard:
        thread_lock = _threads.setdefault(path, threading.RLock())
    if not (thread_lock.acquire(timeout=wait) if wait > 0 else thread_lock.acquire(blocking=False)):
        raise WorkdirBusyError(f"the work folder {path.parent.parent} is in use by another thread of this process")
    try:
        if _held.get(path):
            _held[path] += 1
            try:
                yield
            finally:
                _held[path] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            crashed = _acquire(fd, path, purpose, wait)
            _held[path] = 1
            try:
                if crashed or path not in _swept:  # a clean release leaves nothing behind: no walk needed
                    sweep_temp_files(path.parent.parent)
                    _swept.add(path)
                yield
            finally:
                _held.pop(path, None)
                os.ftruncate(fd, 0)
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        thread_lock.release()


def writes_workdir(purpose: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: hold :func:`workdir_lock` on the function's first argument (the work folder) for the call.

    In a distributed training (torchrun sets ``RANK``) only rank 0 writes the work folder, so only it locks.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            workdir = args[0] if args else kwargs["workdir"]
            if not isinstance(workdir, str | os.PathLike):
                raise TypeError(f"{fn.__name__}: the work folder must be a path, not {type(workdir).__name__}")
            if os.environ.get("RANK", "0") != "0":  # a distributed run's other ranks: rank 0 alone writes
                return fn(*args, **kwargs)
            with workdir_lock(Path(workdir), purpose):
                return fn(*args, **kwargs)

        return locked

    return decorate


def _acquire(fd: int, path: Path, purpose: str, wait: float) -> bool:
    """Take the lock (waiting up to ``wait`` s) and record this process; True when the last holder did not release it."""
    started = time.monotonic()
    deadline = started + wait
    announced = False
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            holder = _holder(fd)
            if time.monotonic() >= deadline:
                raise WorkdirBusyError(
                    f"the work folder {path.parent.parent} is in use by {_describe(holder)}; waited {wait:g} s "
                    f"(wait longer with --lock-timeout or ${TIMEOUT_ENV})"
                ) from None
            # The holder writes its record just after taking the lock: wait briefly for it, so the message names it.
            if not announced and (holder or time.monotonic() - started >= ANNOUNCE_AFTER_S):
                log.info("work folder in use by %s; waiting up to %.0f s", _describe(holder), wait)
                announced = True
            time.sleep(POLL_S)
    previous = _holder(fd)
    if previous and not _pid_alive(previous):
        log.warning("stale lock: %s ended without releasing the work folder; cleaning up after it", _describe(previous))
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose,
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return bool(previous)


def sweep_temp_files(root: Path) -> int:
    """Remove what crashed writers left under ``root`` (call only while holding its lock); returns the count."""
    removed = 0
    for folder, dirs, names in os.walk(root):
        for name in [d for d in dirs if STAGING_DIR.match(d)]:
            shutil.rmtree(Path(folder, name), ignore_errors=True)
            dirs.remove(name)
            removed += 1
        for name in names:
            if TEMP_FILE.match(name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d temp file(s) or staging folder(s) left by an interrupted run", removed)
    return removed
