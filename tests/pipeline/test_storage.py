"""``file_lock``: an exclusive advisory lock that writers of one table take in turn."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.storage import file_lock

REPO = Path(__file__).resolve().parents[2]


def _is_free(path: Path) -> bool:
    """Whether another process could take the lock now (a non-blocking probe in a fresh interpreter)."""
    probe = ("import fcntl, sys\nwith open(sys.argv[1], 'a+b') as h:\n"
             "    try:\n        fcntl.flock(h.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n    except BlockingIOError:\n"
             "        sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", probe, str(path)], timeout=60).returncode == 0


def test_creates_the_lock_file_and_its_folder_and_keeps_its_content(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / ".table.lock"
    with file_lock(path):
        assert path.exists()
    path.write_bytes(b"keep")
    with file_lock(path):
        pass
    assert path.read_bytes() == b"keep"  # opened for append: never truncated


def test_another_process_cannot_take_it_while_held(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with file_lock(path):
        assert not _is_free(path)
    assert _is_free(path)


def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    events: list[str] = []
    first_in, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with file_lock(path):
            events.append("first in")
            first_in.set()
            release.wait(30)
            events.append("first out")

    def second() -> None:
        with file_lock(path):  # its own open file: flock excludes it even within one process
            events.append("second in")
            second_in.set()

    threads = [threading.Thread(target=first, daemon=True)]
    threads[0].start()
    assert first_in.wait(30)
    threads.append(threading.Thread(target=second, daemon=True))
    threads[1].start()
    assert not second_in.wait(0.5)  # blocked while the first holds the lock
    release.set()
    assert second_in.wait(30)
    for thread in threads:
        thread.join(30)
    assert events == ["first in", "first out", "second in"]


def test_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with pytest.raises(RuntimeError, match="boom"):
        with file_lock(path):
            raise RuntimeError("boom")
    assert _is_free(path)
    with open(path, "a+b") as handle:  # and this process can take it at once
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_released_when_the_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    crash = "import os, sys\nfrom pipeline.storage import file_lock\nwith file_lock(__import__('pathlib').Path(sys.argv[1])):\n    os._exit(3)\n"
    result = subprocess.run([sys.executable, "-c", crash, str(path)], cwd=REPO, timeout=120)
    assert result.returncode == 3 and path.exists()
    assert _is_free(path)


def test_concurrent_read_modify_writes_lose_nothing(tmp_path: Path) -> None:
    counter, lock = tmp_path / "counter.txt", tmp_path / ".counter.lock"
    counter.write_text("0")
    bump = ("import sys, time\nfrom pathlib import Path\nfrom pipeline.storage import file_lock\n"
            "counter, lock = Path(sys.argv[1]), Path(sys.argv[2])\nfor _ in range(25):\n    with file_lock(lock):\n"
            "        value = int(counter.read_text())\n        time.sleep(0.002)  # widen the race window\n"
            "        counter.write_text(str(value + 1))\n")
    workers = [subprocess.Popen([sys.executable, "-c", bump, str(counter), str(lock)], cwd=REPO) for _ in range(3)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    assert counter.read_text() == "75"
