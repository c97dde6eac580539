"""One writer per work folder: a second one waits, then gives up with a clear error; a crashed one leaves nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.errors import WorkdirBusyError
from pipeline.locking import lock_path, sweep_temp_files, workdir_lock

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from pipeline.locking import workdir_lock
with workdir_lock(Path(sys.argv[1]), "holder-for-test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextmanager
def held_elsewhere(workdir: Path, seconds: float = 30) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the work folder's lock for up to ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    with held_elsewhere(tmp_path) as holder:
        start = time.perf_counter()
        with pytest.raises(WorkdirBusyError) as caught, workdir_lock(tmp_path, "test", timeout=0.6):
            pass
        assert time.perf_counter() - start >= 0.6
        assert f"PID {holder.pid} (holder-for-test" in str(caught.value) and "waited 0.6 s" in str(caught.value)


def test_a_waiting_writer_proceeds_once_the_holder_is_done(tmp_path: Path) -> None:
    with held_elsewhere(tmp_path, seconds=1.0):
        start = time.perf_counter()
        with workdir_lock(tmp_path, "test", timeout=30):
            waited = time.perf_counter() - start
    assert 0.3 < waited < 15


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path: Path) -> None:
    with workdir_lock(tmp_path, "outer"), workdir_lock(tmp_path, "inner", timeout=0):
        holder = json.loads(lock_path(tmp_path).read_text())
        assert holder["purpose"] == "outer"
    with workdir_lock(tmp_path, "again", timeout=0):
        pass
    assert lock_path(tmp_path).read_text() == ""  # released: no holder recorded


def test_a_stale_lock_is_reported_and_what_the_crashed_run_left_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path).parent.mkdir(parents=True)
    lock_path(tmp_path).write_text(json.dumps({"pid": dead.pid, "purpose": "ingest", "since": "then"}))
    leftovers = [tmp_path / ".catalog.parquet.0123456789abcdef.tmp.parquet",
                 tmp_path / "volumes" / ".scan_1.nii.fedcba9876543210.tmp.nii"]
    kept = [tmp_path / "catalog.parquet", tmp_path / "volumes" / "scan_1.nii", tmp_path / ".tmp_not_ours"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "registry" / "versions" / ".v-abc.partial" / "models").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="pipeline.locking"), workdir_lock(tmp_path, "test", timeout=0):
        pass
    assert "stale lock" in caplog.text and f"PID {dead.pid}" in caplog.text
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)
    assert not (tmp_path / "registry" / "versions" / ".v-abc.partial").exists()
    assert sweep_temp_files(tmp_path) == 0


def test_the_command_line_exits_2_with_one_line_when_the_work_folder_stays_busy(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.dcm").write_bytes(b"not dicom")
    with held_elsewhere(tmp_path / "w"):
        done = subprocess.run([sys.executable, "-m", "pipeline", "--lock-timeout", "0.5", "ingest", str(source),
                               "--workdir", str(tmp_path / "w")], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("scanlens: error")]
    assert errors == [done.stderr.splitlines()[-1]]  # one error line, last (after the "waiting" notice)
    assert errors[0].startswith("scanlens: error: the work folder ") and "is in use by PID" in errors[0]
    assert "waited 0.5 s" in errors[0] and not (tmp_path / "w" / "catalog.parquet").exists()
