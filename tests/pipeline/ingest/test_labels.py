"""The labels file: validation rules (contradictory rows, split names) and how rows join the scans."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.deid import Pseudonymizer
from pipeline.errors import UserInputError
from pipeline.ingest.labels import join_labels, normalise_ref, read_labels
from pipeline.ingest.tables import CATALOG_COLUMNS, SCANS_COLUMNS

PSEUDO = Pseudonymizer(b"k")


def _labels(tmp_path: Path, text: str) -> pd.DataFrame:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return read_labels(path)


def _scan(scan_id: str, series_uid: str, patient_id: str | None = "pat_x", reason: str | None = None) -> dict:
    row: dict = dict.fromkeys(SCANS_COLUMNS)
    row |= {"scan_id": scan_id, "series_id": PSEUDO.series(series_uid), "patient_id": patient_id,
            "quarantine_reason": reason, "warnings": []}
    return row


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three usable scans (two share series 1.1) and one rejected scan; files a/1.dcm .. d/1.dcm."""
    scans = pd.DataFrame([
        _scan("scan_a", "1.1"), _scan("scan_b", "1.1"), _scan("scan_c", "2.2", patient_id=None),
        _scan("scan_d", "3.3", reason="missing_slices"),
    ], columns=SCANS_COLUMNS)
    manifest = pd.DataFrame({
        "source_path": ["a/1.dcm", "b/1.dcm", "c/1.nii", "d/1.dcm", "e/junk.txt"],
        "scan_id": ["scan_a", "scan_b", "scan_c", "scan_d", None],
    })
    return scans, manifest


# --- read_labels ---------------------------------------------------------------------------------------------


def test_comment_lines_are_skipped_and_line_numbers_count_them(tmp_path: Path) -> None:
    frame = _labels(tmp_path, "# made by import-medmnist\n# columns: ...\nscan_ref,label,split\n1.2,0,train\n1.3,,\n")
    assert frame["line"].tolist() == [4, 5]
    assert frame["label"].tolist()[0] == 0 and pd.isna(frame["label"].tolist()[1])
    assert frame["split"].tolist() == ["train", None] and frame["patient_id"].tolist() == [None, None]


def test_repeated_identical_rows_for_one_scan_are_one_row(tmp_path: Path) -> None:
    frame = _labels(tmp_path, "scan_ref,label,split\n1.2,1,val\n1.3,0,val\n1.2,1,val\n")
    assert frame["scan_ref"].tolist() == ["1.2", "1.3"] and frame["line"].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("rows", "lines"),
    [
        ("1.2,1,train\n1.3,0,train\n1.2,0,train\n", "2, 4"),  # two labels for one scan
        ("1.2,1,train\n1.2,1,test\n", "2, 3"),  # two splits for one scan
        pytest.param("1.2,1,train\n1.2,,train\n", "2, 3"),  # a label and an unknown one
        pytest.param("1.2,1,train\n1.2,1,\n", "2, 3"),  # a split and no split
    ],
    ids=["label", "split", "label-vs-unknown", "split-vs-none"],
)
def test_contradictory_rows_for_one_scan_are_refused_naming_their_lines(tmp_path: Path, rows: str, lines: str) -> None:
    with pytest.raises(UserInputError, match=f"contradictory rows for one scan on line\\(s\\) {lines}$"):
        _labels(tmp_path, "scan_ref,label,split\n" + rows)


@pytest.mark.parametrize("split", ["Train", "validation", "tst", "train "])
def test_a_split_outside_train_val_test_is_refused(tmp_path: Path, split: str) -> None:
    if split != split.strip():  # surrounding spaces are stripped: "train " is fine
        assert _labels(tmp_path, f"scan_ref,label,split\n1.2,1,{split}\n")["split"].tolist() == ["train"]
        return
    with pytest.raises(UserInputError, match=r"split must be one of train, val, test or empty, line\(s\) 3$"):
        _labels(tmp_path, f"scan_ref,label,split\n1.1,0,val\n1.2,1,{split}\n")


def test_bad_split_lines_are_listed_up_to_ten(tmp_path: Path) -> None:
    rows = "".join(f"1.{k},0,holdout\n" for k in range(12))
    with pytest.raises(UserInputError, match=r"line\(s\) 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \(\+2 more\)$"):
        _labels(tmp_path, "scan_ref,label,split\n" + rows)


def test_a_missing_split_column_means_no_split(tmp_path: Path) -> None:
    assert _labels(tmp_path, "scan_ref,label\n1.2,1\n")["split"].tolist() == [None]


# --- join_labels ---------------------------------------------------------------------------------------------


def test_an_unlabelled_run_catalogues_every_usable_scan_without_labels() -> None:
    scans, manifest = _tables()
    joined = join_labels(scans, manifest, None, PSEUDO, keep_demographics=False)
    catalog = joined.catalog
    assert catalog["scan_id"].tolist() == ["scan_a", "scan_b", "scan_c"]  # the rejected scan is not catalogued
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert catalog["label"].isna().all() and catalog["split"].isna().all()
    assert joined.unlabeled_scan_ids == [] and joined.unmatched_label_lines == []


def test_rows_match_by_source_path_or_by_series_uid(tmp_path: Path) -> None:
    scans, manifest = _tables()
    labels = _labels(tmp_path, "scan_ref,label,split,patient_id\n1.1,1,train,\n./c\\1.nii,0,test,P-7\n")
    joined = join_labels(scans, manifest, labels, PSEUDO, keep_demographics=False)
    catalog = joined.catalog.set_index("scan_id")
    assert catalog["label"].tolist() == [1, 1, 0]  # both scans of series 1.1, and the NIfTI by its path
    assert catalog["split"].tolist() == ["train", "train", "test"]
    assert catalog.loc["scan_c", "patient_id"] == PSEUDO.patient("P-7")  # the labels file names its patient
    assert catalog.loc["scan_a", "patient_id"] == "pat_x"
    assert joined.unlabeled_scan_ids == [] and joined.unmatched_label_lines == []


def test_unmatched_rows_are_reported_and_unlabelled_scans_left_out(tmp_path: Path) -> None:
    scans, manifest = _tables()
    labels = _labels(tmp_path, "scan_ref,label\nb/1.dcm,1\n9.9,0\nnot/there.dcm,1\n3.3,1\n")
    joined = join_labels(scans, manifest, labels, PSEUDO, keep_demographics=False)
    assert joined.catalog["scan_id"].tolist() == ["scan_b"]
    assert joined.unlabeled_scan_ids == ["scan_a", "scan_c"]
    assert joined.unmatched_label_lines == [3, 4]  # line 5 matches the rejected scan's series: matched, not catalogued


def test_a_scan_without_patient_gets_a_keyed_placeholder(tmp_path: Path) -> None:
    scans, manifest = _tables()
    joined = join_labels(scans, manifest, None, PSEUDO, keep_demographics=False)
    patient = joined.catalog.set_index("scan_id").loc["scan_c", "patient_id"]
    assert patient == PSEUDO.patient("unknown-patient:scan_c")


def test_two_lines_labelling_one_scan_are_refused(tmp_path: Path) -> None:
    scans, manifest = _tables()
    labels = _labels(tmp_path, "scan_ref,label\n1.1,1\na/1.dcm,1\n")  # the series and one of its files
    with pytest.raises(UserInputError, match="lines 2 and 3 both label one scan"):
        join_labels(scans, manifest, labels, PSEUDO, keep_demographics=False)


def test_demographic_columns_are_kept_only_when_configured() -> None:
    scans, manifest = _tables()
    assert "patient_sex" not in join_labels(scans, manifest, None, PSEUDO, False).catalog.columns
    assert join_labels(scans, manifest, None, PSEUDO, True).catalog.columns[-2:].tolist() == ["patient_sex", "patient_age"]


@pytest.mark.parametrize(("ref", "expected"), [("./a/b.dcm", "a/b.dcm"), ("a\\b.dcm", "a/b.dcm"), ("/a/b.dcm", "a/b.dcm"),
                                               ("a//b.dcm", "a/b.dcm"), ("", "")])
def test_path_references_are_normalised_to_the_manifest_form(ref: str, expected: str) -> None:
    assert normalise_ref(ref) == expected
