"""Scenario: the machine's operator (or the OOM killer) ends ``scanlens ingest`` with ``kill -9`` at a
random moment, the command line and its isolated worker processes at once, and then runs the same
command again. Whatever the kill interrupted (start-up, reading files, building volumes, writing the
tables), the rerun leaves the work folder exactly as one uninterrupted run does: the same tables,
the same volume files byte for byte, no temp file or staging folder, and no worker process left
running. A parent killed alone takes its workers with it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import REPO, lock_holder_pid
from tests.dicom_factory import write_series, z_positions

#: One secret for every run: the pseudonyms (scan ids, volume names) depend on it.
SECRET = "kill-test-secret"
TABLES = ("catalog.parquet", "quarantine.parquet", "ingest_manifest.parquet", ".scanlens/scans.parquet")
N_KILLS = 5
SEED = 20250101


@dataclass(frozen=True)
class Source:
    folder: Path
    labels: Path


@dataclass(frozen=True)
class Reference:
    workdir: Path
    lock_at: float  # seconds from start until the run held the writer lock
    duration: float  # seconds from start until the run exited


def _env() -> dict[str, str]:
    env = {**os.environ, "SCANLENS_SECRET": SECRET}
    env.pop("SCANLENS_LOCK_TIMEOUT", None)
    return env


def _start(source: Source, workdir: Path) -> subprocess.Popen[bytes]:
    """``scanlens ingest`` in a new session: its process group is the CLI and every worker it forks."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", str(source.folder), "--workdir", str(workdir),
         "--labels", str(source.labels)],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _ingest(source: Source, workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", str(source.folder), "--workdir", str(workdir),
         "--labels", str(source.labels)],
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )


def _live_processes_of(workdir: Path) -> list[psutil.Process]:
    """Running (not zombie) processes whose command line names ``workdir``: the CLI and its forked workers."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and str(workdir) in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_no_process_left(workdir: Path, timeout: float = 120.0) -> None:
    """A process killed inside ``os.sync()`` or ``fsync`` under heavy I/O only dies once the call returns:
    wait for that, not longer."""
    deadline = time.monotonic() + timeout
    while (left := _live_processes_of(workdir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"ingest processes still running after the kill: {[(p.pid, p.info['cmdline']) for p in left]}"


def _leftovers(workdir: Path) -> list[str]:
    """Temp files (``.tmp`` in the name) and staging folders (``.partial``) anywhere under the work folder."""
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if ".tmp" in p.name or (p.is_dir() and p.name.endswith(".partial")))


def _files(workdir: Path) -> dict[str, bytes]:
    """Every file of the work folder but the lock file (which each run takes and releases)."""
    return {p.relative_to(workdir).as_posix(): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.relative_to(workdir).as_posix() != ".scanlens/lock"}


def _assert_same_as_reference(workdir: Path, reference: Path) -> None:
    assert _leftovers(workdir) == []
    for table in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(workdir / table), pd.read_parquet(reference / table),
                                      obj=table)
    ours, theirs = _files(workdir), _files(reference)
    volumes = sorted(name for name in theirs if name.startswith("volumes/"))
    assert sorted(name for name in ours if name.startswith("volumes/")) == volumes
    assert [name for name in volumes if ours[name] != theirs[name]] == [], "volumes differ from the reference"
    assert sorted(ours) == sorted(theirs)
    assert [name for name in theirs if ours[name] != theirs[name]] == [], "files differ from the reference"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """BreastMNIST images, AdrenalMNIST3D volumes (28-slice DICOM series) and two unlabelled CT series."""
    from pipeline.demo import DemoArchive, prepare_demo_source

    root = tmp_path_factory.mktemp("kill_source")
    data = REPO / "data" / "demo"
    demo = prepare_demo_source([DemoArchive(data / "breastmnist.npz", 20), DemoArchive(data / "adrenalmnist3d.npz", 8)],
                               root / "src", root / "labels.csv", seed=5)
    write_series(demo.folder / "extra" / "a", z_positions(6), patient_id="EXTRA-1")
    write_series(demo.folder / "extra" / "b", z_positions(4, step=1.5), patient_id="EXTRA-2", rows=8, cols=7)
    return Source(demo.folder, demo.labels)


def _timed_run(source: Source, workdir: Path) -> Reference:
    """One uninterrupted run, timed: when it took the lock and when it ended."""
    start = time.monotonic()
    proc = _start(source, workdir)
    lock_at = None
    while proc.poll() is None:
        if lock_at is None and lock_holder_pid(workdir) == proc.pid:
            lock_at = time.monotonic() - start
        time.sleep(0.005)
    duration = time.monotonic() - start
    assert proc.returncode == 0
    assert lock_at is not None and lock_at < duration
    return Reference(workdir, lock_at, duration)


@pytest.fixture(scope="module")
def reference(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The uninterrupted result, and the timing of a second (warm) uninterrupted run into a fresh folder."""
    root = tmp_path_factory.mktemp("kill_ref")
    first = _timed_run(source, root / "w")
    catalog = pd.read_parquet(first.workdir / "catalog.parquet")
    assert len(catalog) == 20 * 3 + 8 * 3 and len(list((first.workdir / "volumes").iterdir())) == len(catalog) + 2
    assert _leftovers(first.workdir) == []
    timing = _timed_run(source, root / "timing")
    _assert_same_as_reference(timing.workdir, first.workdir)  # an uninterrupted run is reproducible
    return Reference(first.workdir, timing.lock_at, timing.duration)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished first
        pass
    proc.wait(timeout=300)  # (see _assert_no_process_left)


def _kill_while_writing(proc: subprocess.Popen[bytes], workdir: Path, offset: float) -> None:
    """SIGKILL the group ``offset`` seconds after the run took the lock (start-up time varies with load)."""
    deadline = time.monotonic() + 120
    while lock_holder_pid(workdir) != proc.pid and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(offset)
    _kill_group(proc)


def _kill_times(ref: Reference) -> list[tuple[str, float]]:
    """One kill during start-up (before the lock), the others spread over the part of the run that
    writes, measured from when it takes the lock: one random moment in each of ``N_KILLS - 1``
    equal slices of the reference run's writing time."""
    rng = random.Random(SEED)
    writing = ref.duration - ref.lock_at
    return [("start-up", rng.uniform(0.1, 0.9) * ref.lock_at)] + [
        ("writing", (k + rng.random()) / (N_KILLS - 1) * writing) for k in range(N_KILLS - 1)
    ]


def test_kill_9_at_random_moments_then_rerun_gives_the_uninterrupted_result(
    source: Source, reference: Reference, tmp_path: Path,
) -> None:
    interrupted_holders = 0
    for k, (phase, delay) in enumerate(_kill_times(reference)):
        workdir = tmp_path / f"w{k}"
        proc = _start(source, workdir)
        if phase == "start-up":
            time.sleep(delay)
            _kill_group(proc)
        else:
            _kill_while_writing(proc, workdir, delay)
        _assert_no_process_left(workdir)
        held = lock_holder_pid(workdir) == proc.pid  # killed while holding the lock: a stale lock
        interrupted_holders += int(held and proc.returncode == -signal.SIGKILL)
        leftovers = _leftovers(workdir) if workdir.exists() else []

        rerun = _ingest(source, workdir)
        context = f"kill {k} {delay:.2f} s into {phase} (lock held: {held}, leftovers: {len(leftovers)})"
        assert rerun.returncode == 0, f"{context}\n{rerun.stderr[-3000:]}"
        if held:
            assert "stale lock" in rerun.stderr, context
        if leftovers:
            assert "left by an interrupted run" in rerun.stderr, context
        _assert_same_as_reference(workdir, reference.workdir)
        _assert_no_process_left(workdir)
    # the kills were not all too late to interrupt anything
    assert interrupted_holders >= 2, f"only {interrupted_holders} kills hit a run holding the lock"


def test_repeated_kills_of_resumed_runs_still_converge(source: Source, reference: Reference, tmp_path: Path) -> None:
    """Each rerun is killed in turn, before it finishes what the previous one left; the last completes."""
    workdir = tmp_path / "w"
    rng = random.Random(SEED + 1)
    kills = []
    for _ in range(3):
        proc = _start(source, workdir)
        offset = rng.uniform(0.2, 0.8) * (reference.duration - reference.lock_at)
        _kill_while_writing(proc, workdir, offset)
        kills.append(f"{offset:.2f} s after the lock: exit {proc.returncode}, leftovers {_leftovers(workdir)[:3]}")
        _assert_no_process_left(workdir)
    rerun = _ingest(source, workdir)
    assert rerun.returncode == 0, f"{kills}\n{rerun.stderr[-3000:]}"
    try:
        _assert_same_as_reference(workdir, reference.workdir)
    except AssertionError as exc:
        raise AssertionError(f"after kills {kills}: {exc}") from exc


def test_workers_die_with_their_parent_killed_alone(source: Source, reference: Reference, tmp_path: Path) -> None:
    """``kill -9`` of the command line's PID only (not its group): its isolated workers exit too."""
    workdir = tmp_path / "w"
    proc = _start(source, workdir)
    parent = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while not workers and proc.poll() is None and time.monotonic() < deadline:
        if lock_holder_pid(workdir) == proc.pid:
            workers = [c for c in parent.children(recursive=True) if c.pid in {p.pid for p in _live_processes_of(workdir)}]
        time.sleep(0.005)
    assert workers, "the run ended before its workers could be seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    _, alive = psutil.wait_procs(workers, timeout=120)
    assert [p.pid for p in alive if _running(p)] == [], "workers outlived their parent"
    _assert_no_process_left(workdir)
    rerun = _ingest(source, workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_same_as_reference(workdir, reference.workdir)
