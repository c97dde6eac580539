"""The command line contract: exit 0 on success, 2 with one clear line for user errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.dicom_factory import write_series, z_positions


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("scanlens: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("import-medmnist", "ingest", "train", "evaluate", "status"):
        assert command in result.stdout


def test_ingest_then_status(tmp_path: Path) -> None:
    write_series(tmp_path / "src", z_positions(3))
    result = run("ingest", tmp_path / "src", "--workdir", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    assert "1 scans catalogued" in result.stdout
    status = run("status", "--workdir", tmp_path / "w")
    assert status.returncode == 0 and "CT 3D: 1" in status.stdout


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing_src", "does not exist"),
        ("empty_src", "is empty"),
        ("labels_missing_columns", "lacks required column(s) label"),
        ("labels_unknown_scans", "match no scan"),
        ("labels_not_integer", "not an integer"),
        ("missing_npz", "npz file not found"),
        ("status_without_catalog", "no catalogue"),
        ("evaluate_without_catalog", "no catalogue"),
        ("evaluate_one_fold", "at least 2 folds"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, case: str, fragment: str) -> None:
    src, w, labels = tmp_path / "src", tmp_path / "w", tmp_path / "labels.csv"
    if case != "missing_src":
        src.mkdir()
    if case.startswith("labels"):
        write_series(src / "s", z_positions(2))
        labels.write_text({
            "labels_missing_columns": "scan_ref,diagnosis\n1.2.3,1\n",
            "labels_unknown_scans": "scan_ref,label\n1.2.3.999,1\n",
            "labels_not_integer": "scan_ref,label\n1.2.3,benign\n",
        }[case])
    if case == "missing_npz":
        result = run("import-medmnist", tmp_path / "nope.npz", "--out", tmp_path / "out")
    elif case == "status_without_catalog":
        result = run("status", "--workdir", w)
    elif case.startswith("evaluate"):
        result = run("evaluate", "--workdir", w, "--folds", "1" if case == "evaluate_one_fold" else "5")
    else:
        result = run("ingest", src, "--workdir", w, *(["--labels", labels] if case.startswith("labels") else []))
    assert_user_error(result, fragment)
    if case == "labels_unknown_scans":  # the run went on: the scans are catalogued, the rows are reported
        assert (w / "catalog.parquet").exists() and (w / "quarantine.parquet").exists()
