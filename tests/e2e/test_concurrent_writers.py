"""Scenario: two people (or a person and the Dagster sensor) write into one work folder at once.

* Two ``scanlens ingest`` runs of different sources start together: the one that finds the folder
  taken waits for the writer lock and then completes; with a short ``--lock-timeout`` it gives up
  instead, with exit 2 and one error line saying who holds the folder. Either way the catalogue
  left behind is consistent (every volume it names exists; the manifest's catalogued files are
  exactly the catalogue's scans) and equals what the last completed run gives on its own.
* Two ``scanlens score`` runs on the same inbox start together: both succeed, and each scan is
  scored once by the champion and has exactly one SR and one Secondary Capture in the outbox.
* A run killed while holding the lock left its PID in the lock file and temp files behind: the
  next ingest reports the stale lock, removes the temp files and staging folders, and succeeds.

To make the two runs meet at the lock on every machine, whichever takes the lock first is
stopped (SIGSTOP to its process group) until the other reports that it waits, then continued.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, lock_holder_pid, make_inbox
from tests.dicom_factory import write_series, z_positions

SECRET = "concurrent-test-secret"


@dataclass(frozen=True)
class Source:
    folder: Path
    labels: Path


@dataclass
class Run:
    """A CLI command started in its own process group, its output going to files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait(self, timeout: float = 600) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.stdout.read_text(errors="replace"), self.text()


def _env() -> dict[str, str]:
    env = {**os.environ, "SCANLENS_SECRET": SECRET}
    env.pop("SCANLENS_LOCK_TIMEOUT", None)
    return env


def _start(name: str, args: list[str], logs: Path) -> Run:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=_env(),
                                stdout=stdout, stderr=stderr, start_new_session=True)
    return Run(name, proc, out, err)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], check=False, cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)


def _ingest_args(source: Source, workdir: Path) -> list[str]:
    return ["ingest", str(source.folder), "--workdir", str(workdir), "--labels", str(source.labels)]


def _hold_until_the_other_waits(runs: list[Run], workdir: Path, timeout: float = 300) -> tuple[Run, Run]:
    """Stop whichever run takes the lock first (its whole process group) until the other logs that it
    waits for that PID, then let it go on. Returns (the first holder, the waiter)."""
    by_pid = {run.proc.pid: run for run in runs}
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "neither run took the lock"
        assert all(run.proc.poll() is None for run in runs), [run.text()[-2000:] for run in runs]
        holder = lock_holder_pid(workdir)
        if holder in by_pid:
            os.killpg(holder, signal.SIGSTOP)
            if lock_holder_pid(workdir) == holder:  # still holding it once stopped
                break
            os.killpg(holder, signal.SIGCONT)
        time.sleep(0.005)
    first = by_pid[holder]
    (other,) = [run for run in runs if run is not first]
    try:
        while f"in use by PID {holder}" not in other.text():
            assert other.proc.poll() is None, f"{other.name} ended without waiting:\n{other.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{other.name} never reported waiting:\n{other.text()[-3000:]}"
            time.sleep(0.02)
    finally:
        os.killpg(holder, signal.SIGCONT)
    return first, other


def _leftovers(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if ".tmp" in p.name or (p.is_dir() and p.name.endswith(".partial")))


def _assert_consistent(workdir: Path) -> pd.DataFrame:
    """Every volume the catalogue names exists, the manifest's catalogued files are exactly the
    catalogue's scans, the volumes folder holds exactly the scans table's volumes; returns the catalogue."""
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    manifest = pd.read_parquet(workdir / "ingest_manifest.parquet")
    scans = pd.read_parquet(workdir / ".scanlens" / "scans.parquet")
    assert len(catalog) > 0
    assert [p for p in catalog["volume_path"] if not (workdir / p).is_file()] == []
    assert set(manifest.loc[manifest["status"] == "catalogued", "scan_id"]) == set(catalog["scan_id"])
    assert set(catalog["scan_id"]) <= set(scans["scan_id"])
    assert {f"volumes/{p.name}" for p in (workdir / "volumes").iterdir()} == set(scans["volume_path"].dropna())
    assert _leftovers(workdir) == []
    return catalog


def _assert_same_catalogue(workdir: Path, reference: Path) -> None:
    for table in ("catalog.parquet", "ingest_manifest.parquet", "quarantine.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(workdir / table), pd.read_parquet(reference / table), obj=table)
    assert sorted(p.name for p in (workdir / "volumes").iterdir()) == sorted(
        p.name for p in (reference / "volumes").iterdir())


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Source]:
    """Two different labelled sources, and each one ingested alone (the expected end states)."""
    from pipeline.demo import DemoArchive, prepare_demo_source
    from pipeline.ingest import IngestConfig, ingest

    root = tmp_path_factory.mktemp("concurrent_sources")
    data = REPO / "data" / "demo"
    a = prepare_demo_source([DemoArchive(data / "breastmnist.npz", 12), DemoArchive(data / "adrenalmnist3d.npz", 4)],
                            root / "a" / "src", root / "a" / "labels.csv", seed=1)
    b = prepare_demo_source([DemoArchive(data / "breastmnist.npz", 5)], root / "b" / "src", root / "b" / "labels.csv",
                            seed=2)
    write_series(b.folder / "extra", z_positions(5), patient_id="EXTRA-B")
    out = {"a": Source(a.folder, a.labels), "b": Source(b.folder, b.labels)}
    for name, source in out.items():
        ingest(IngestConfig(source=source.folder, workdir=root / f"alone_{name}", labels=source.labels, secret=SECRET))
    return out


def _alone(sources: dict[str, Source], name: str) -> Path:
    return sources[name].folder.parent.parent / f"alone_{name}"


def test_two_ingests_at_once_the_second_waits_then_completes(sources: dict[str, Source], tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    runs = [_start(name, ["--lock-timeout", "300", *_ingest_args(sources[name], workdir)], tmp_path / "logs")
            for name in ("a", "b")]
    first, second = _hold_until_the_other_waits(runs, workdir)
    results = {run.name: run.wait() for run in runs}
    for name, (code, stdout, stderr) in results.items():
        assert code == 0, f"{name}: {stderr[-3000:]}"
        assert "scans catalogued" in stdout and "Traceback" not in stderr
    assert f"work folder in use by PID {first.proc.pid}" in results[second.name][2]
    catalog = _assert_consistent(workdir)
    # the last writer's source is what the folder now holds, exactly as if it had run alone
    _assert_same_catalogue(workdir, _alone(sources, second.name))
    assert set(catalog["scan_id"]).isdisjoint(pd.read_parquet(_alone(sources, first.name) / "catalog.parquet")["scan_id"])
    assert (workdir / ".scanlens" / "lock").read_text() == ""  # released


def test_a_second_ingest_with_a_short_lock_timeout_exits_2_with_one_line(
    sources: dict[str, Source], tmp_path: Path,
) -> None:
    workdir = tmp_path / "w"
    holder = _start("a", _ingest_args(sources["a"], workdir), tmp_path / "logs")
    deadline = time.monotonic() + 300
    while lock_holder_pid(workdir) != holder.proc.pid:
        assert holder.proc.poll() is None and time.monotonic() < deadline, holder.text()[-3000:]
        time.sleep(0.005)
    os.killpg(holder.proc.pid, signal.SIGSTOP)  # it holds the lock for as long as the second one tries
    try:
        clock = time.monotonic()
        busy = _run(["--lock-timeout", "1", *_ingest_args(sources["b"], workdir)])
        waited = time.monotonic() - clock
    finally:
        os.killpg(holder.proc.pid, signal.SIGCONT)
    assert busy.returncode == 2, busy.stderr
    assert "Traceback" not in busy.stderr and busy.stdout == ""
    errors = [line for line in busy.stderr.splitlines() if line.startswith("scanlens: error:")]
    assert len(errors) == 1, busy.stderr
    assert re.fullmatch(
        rf"scanlens: error: the work folder {re.escape(str(workdir))} is in use by PID {holder.proc.pid} "
        r"\(ingest, since [^)]+\); waited 1 s \(wait longer with --lock-timeout or \$SCANLENS_LOCK_TIMEOUT\)",
        errors[0]), errors[0]
    # nothing else on stderr but log records
    others = [line for line in busy.stderr.splitlines() if line not in errors]
    assert all(line.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING") for line in others), busy.stderr
    assert waited >= 1.0
    code, _, stderr = holder.wait()
    assert code == 0, stderr[-3000:]
    _assert_consistent(workdir)
    _assert_same_catalogue(workdir, _alone(sources, "a"))


def test_two_score_runs_on_one_inbox_score_each_scan_once(champion_workdir: Path, tmp_path: Path) -> None:
    from pipeline.registry import Registry

    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    inbox = make_inbox(tmp_path, per_split=1, seed=13)
    outbox = tmp_path / "outbox"
    version = Registry(workdir).champion()
    assert version is not None
    args = ["--lock-timeout", "300", "score", str(inbox), "--workdir", str(workdir), "--out", str(outbox),
            "--device", "cpu"]
    runs = [_start(name, args, tmp_path / "logs") for name in ("one", "two")]
    _hold_until_the_other_waits(runs, workdir)
    results = [run.wait() for run in runs]
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
        assert "Traceback" not in stderr

    scan_ids = sorted(set().union(*(pd.read_parquet(c)["scan_id"]
                                    for c in (workdir / "scoring" / "intake").glob("*/catalog.parquet"))))
    assert len(scan_ids) == 3  # one BreastMNIST image per study, three studies
    table = pd.read_parquet(workdir / "scoring" / "scores.parquet")
    mine = table[table["model_version"] == version]
    assert sorted(mine["scan_id"]) == scan_ids  # each scan exactly once
    # between them the two runs scored each scan once and skipped it once
    totals = [re.search(r"(\d+) scans scored, (\d+) already scored", stdout) for _, stdout, _ in results]
    assert all(totals), [stdout for _, stdout, _ in results]
    assert sum(int(m.group(1)) for m in totals if m) == 3 and sum(int(m.group(2)) for m in totals if m) == 3
    names = sorted(p.name for p in outbox.iterdir())
    assert names == sorted([f"{s}_{version}_sr.dcm" for s in scan_ids] + [f"{s}_{version}_sc.dcm" for s in scan_ids])
    assert _leftovers(workdir) == []


def test_a_stale_lock_and_leftover_temp_files_are_cleaned_up_by_the_next_ingest(
    sources: dict[str, Source], tmp_path: Path,
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(_alone(sources, "b"), workdir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(dead.pid, 0)
    (workdir / ".scanlens" / "lock").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "purpose": "ingest", "since": "2025-01-01 00:00:00 UTC"}))
    leftovers = [workdir / ".catalog.parquet.0123456789abcdef.tmp.parquet",
                 workdir / "volumes" / ".scan_0000000000000000.nii.fedcba9876543210.tmp.nii",
                 workdir / "registry" / "versions" / ".v-20250101-000000.partial" / "record.json"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    not_ours = workdir / "notes" / "my.tmp.txt"  # a person's file: not a ScanLens temp file
    not_ours.parent.mkdir()
    not_ours.write_text("keep me")

    result = _run(_ingest_args(sources["a"], workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"stale lock: PID {dead.pid} (ingest, since 2025-01-01 00:00:00 UTC) ended without releasing" in result.stderr
    assert "removed 3 temp file(s) or staging folder(s)" in result.stderr
    assert [p for p in leftovers if p.exists()] == []
    assert not (workdir / "registry" / "versions" / ".v-20250101-000000.partial").exists()
    assert not_ours.read_text() == "keep me"
    not_ours.unlink()  # (it would count as a leftover below)
    assert (workdir / ".scanlens" / "lock").read_text() == ""
    _assert_consistent(workdir)
    _assert_same_catalogue(workdir, _alone(sources, "a"))

