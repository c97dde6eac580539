"""``scanlens fetch``: exit codes, one-line errors, and a labelled training set gathered by StudyInstanceUID."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.deid import Pseudonymizer
from tests.orthanc import Orthanc, free_port
from tests.pipeline.pacs.conftest import upload_study

NAMES = Pseudonymizer(b"test-secret")  # tests/conftest.py sets SCANLENS_SECRET=test-secret


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def run_here(capsys: pytest.CaptureFixture[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command line in this process (argument checks: no need to pay a new interpreter's start-up)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("scanlens: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--since", "2024-01-01"], "expected a date YYYYMMDD, not '2024-01-01'"),
        (["--since", "20240231"], "expected a date YYYYMMDD"),
        (["--study", "1.2.3", "--modality", "CT"], "--modality and --description choose studies with --since"),
        (["--study", "1.2.x"], "not a DICOM UID (digits and dots, at most 64 characters): --study number 1"),
        (["--study", "1.2.3", "--workers", "0"], "--workers must be at least 1"),
        (["--studies", "missing.csv"], "study list not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    result = run_here(capsys, "fetch", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", tmp_path / "out", *extra)
    assert_user_error(result, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("uid,label\n1.2.3,1\n", "lacks the column StudyInstanceUID; it has: uid, label"),
        ("StudyInstanceUID,label\n1.2.3,yes\n", "label is not an integer class index on line 2"),
        (
            "# cohort\nStudyInstanceUID\n1.2.3\nPAT 17\n",
            "not a DICOM UID (digits and dots, at most 64 characters): studies.csv line 4",
        ),
        ("StudyInstanceUID,label\n1.2.3,1\n1.2.3,0\n", "contradictory rows for one study (line 3)"),
    ],
)
def test_a_bad_study_list_exits_2_naming_the_line_not_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    (tmp_path / "studies.csv").write_text(text)
    result = run_here(
        capsys,
        "fetch",
        "--dicomweb",
        "http://127.0.0.1:9/dicom-web",
        "--out",
        tmp_path / "out",
        "--studies",
        tmp_path / "studies.csv",
    )
    assert_user_error(result, fragment)
    assert "PAT 17" not in result.stderr


def test_an_unreachable_archive_and_a_missing_key_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert_user_error(run("fetch", "--dicomweb", url, "--out", tmp_path, "--since", "20240101"), "cannot reach")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SCANLENS_SECRET"}
    result = run("fetch", "--dicomweb", url, "--out", tmp_path, "--study", "1.2.3", env=env)
    assert_user_error(result, "no pseudonymisation key")


def test_a_labelled_training_set_by_study_uid(archive: Orthanc, tmp_path: Path) -> None:
    one = upload_study(archive, tmp_path / "a", n_slices=3, n_series=2)
    two = upload_study(archive, tmp_path / "b", n_slices=3)
    upload_study(archive, tmp_path / "c", n_slices=3)  # in the archive, not in the list
    missing = "1.2.826.0.1.3680043.10.999.1"
    out = tmp_path / "out"
    (tmp_path / "cohort.csv").write_text(f"# cohort\nStudyInstanceUID,label,split\n{one},1,train\n{two},0,val\n")
    result = run(
        "fetch",
        "--dicomweb",
        archive.dicomweb_url,
        "--out",
        out,
        "--studies",
        tmp_path / "cohort.csv",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert f"{NAMES.study(one)}: 6 found, 6 retrieved, 0 already on disk" in result.stdout
    assert "2 studies: 9 instances found, 9 retrieved, 0 already on disk, 0 failed" in result.stdout
    assert one not in result.stdout + result.stderr and two not in result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([NAMES.study(one), NAMES.study(two), "labels.csv"])
    ingest = run("ingest", out, "--workdir", tmp_path / "w", "--labels", out / "labels.csv")
    assert ingest.returncode == 0, ingest.stderr
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert sorted(zip(catalog["label"], catalog["split"], strict=True)) == [(0, "val"), (1, "train"), (1, "train")]

    # a second run: nothing requested again; a study the archive lacks makes it exit 1
    again = run("fetch", "--dicomweb", archive.dicomweb_url, "--out", out, "--study", one, "--study", missing)
    assert again.returncode == 1, again.stderr
    assert f"{NAMES.study(one)}: 6 found, 0 retrieved, 6 already on disk" in again.stdout
    assert f"{NAMES.study(missing)}: not found in the archive" in again.stdout
    assert "1 studies not retrieved completely" in again.stderr and missing not in again.stderr


def test_since_with_a_modality_and_a_description_word(archive: Orthanc, tmp_path: Path) -> None:
    chest = upload_study(archive, tmp_path / "a", study_date="20240110", description="CT chest")
    upload_study(archive, tmp_path / "b", study_date="20240111", description="CT abdomen")
    upload_study(archive, tmp_path / "c", study_date="20240112", modality="MR", description="chest")
    upload_study(archive, tmp_path / "d", study_date="20231231", description="chest")
    result = run(
        "fetch",
        "--dicomweb",
        archive.dicomweb_url,
        "--out",
        tmp_path / "out",
        "--since",
        "20240101",
        "--modality",
        "CT",
        "--description",
        "CHEST",
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [NAMES.study(chest)]
