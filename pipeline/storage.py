"""Atomic writes, deterministic Parquet, advisory file locks and content hashing (paths: :mod:`pipeline.layout`).

Every file ScanLens writes goes to a temporary file in the destination folder first and
is then renamed over the target (``os.replace`` is atomic on POSIX), so a crash mid-run
never leaves a partial table or volume where a reader could see it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, writer: Callable[[Path], object], durable: bool = True) -> None:
    """Call ``writer(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    With ``durable`` the temp file is fsync'ed before the rename, so the data also survives a power
    loss; without it a crashed process still never leaves a partial file under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + "".join(path.suffixes[-2:])  # keep ".nii.gz" so writers pick the format by name
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")  # the writer creates it (usual umask)
    try:
        writer(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def parquet_bytes(frame: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """Serialise a frame to Parquet deterministically (same frame, same bytes)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write ``data`` unless ``path`` already holds exactly these bytes. Returns True if written."""
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_parquet_if_changed(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> bool:
    """Atomically write ``frame`` unless ``path`` already holds exactly these bytes. Returns True if written."""
    return write_bytes_if_changed(path, parquet_bytes(frame, schema))


def read_parquet(path: Path) -> pd.DataFrame | None:
    """Read a Parquet table, or None if it does not exist yet."""
    if not path.exists():
        return None
    return pd.read_parquet(path)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for a read-modify-write.

    Two runs that append to one table (two scoring runs started together) take turns instead of
    losing each other's rows. The lock is released when the block ends or the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
