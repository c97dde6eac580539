"""DICOM outputs: made from odd real-world headers, deterministic UIDs, filed into the source study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from pipeline.scoring.dicom_out import ScoredScan, read_source_headers, write_score_outputs
from tests.dicom_factory import write_series, z_positions

SCORED = ScoredScan("scan_0123456789abcdef", "v-000000000001", 0.8123, 0.5, "positive", "1")


def _odd_source(folder: Path) -> list[Path]:
    def mutate(ds: pydicom.Dataset, k: int) -> None:
        ds.PatientSex = "unknown"  # not M/F/O: highdicom refuses it as is
        ds.StudyDate = "2023-01-05"  # not DA
        if "ReferringPhysicianName" in ds:
            del ds.ReferringPhysicianName

    return write_series(folder, z_positions(3), mutate=mutate)


def test_an_sr_and_sc_are_made_from_invalid_type_2_values_and_keep_the_study(tmp_path: Path) -> None:
    paths = _odd_source(tmp_path / "src")
    source = pydicom.dcmread(paths[0])
    rgb = (np.arange(40 * 50 * 3) % 251).reshape(40, 50, 3).astype(np.uint8)
    out = write_score_outputs(tmp_path / "out", read_source_headers(paths), SCORED, rgb, b"key")
    sr, sc = pydicom.dcmread(out.sr), pydicom.dcmread(out.sc)
    assert sr.PatientSex == "" and sr.StudyDate == "" and sr.PatientID == source.PatientID
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == source.StudyInstanceUID
    referenced = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert sorted(r.ReferencedSOPInstanceUID for r in referenced) == sorted(
        pydicom.dcmread(p).SOPInstanceUID for p in paths)
    assert np.array_equal(sc.pixel_array, rgb)
    again = write_score_outputs(tmp_path / "again", read_source_headers(paths), SCORED, None, b"key")
    assert pydicom.dcmread(again.sr).SOPInstanceUID == sr.SOPInstanceUID and again.sc is None  # same UIDs on a re-make
    other_key = write_score_outputs(tmp_path / "other", read_source_headers(paths), SCORED, None, b"other")
    assert pydicom.dcmread(other_key.sr).SOPInstanceUID != sr.SOPInstanceUID


def test_impossible_dates_and_times_are_emptied_and_the_outputs_still_written(tmp_path: Path) -> None:
    def mutate(ds: pydicom.Dataset, k: int) -> None:
        ds.PatientBirthDate = "19420231"  # eight digits, no such day
        ds.StudyDate = "20231301"  # no month 13
        ds.StudyTime = "256100"  # no hour 25
        ds.ReferringPhysicianName = "DRWHOSMITH"  # highdicom warns, quoting it (redacted by pipeline.logsafety)

    paths = write_series(tmp_path / "src", z_positions(2), mutate=mutate)
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = write_score_outputs(tmp_path / "out", read_source_headers(paths), SCORED, rgb, b"key")
    for made in (pydicom.dcmread(out.sr), pydicom.dcmread(out.sc)):
        assert made.PatientBirthDate == "" and made.StudyDate == "" and made.StudyTime == ""
        assert made.StudyInstanceUID == pydicom.dcmread(paths[0]).StudyInstanceUID


def test_the_sr_carries_the_decision_the_reason_for_referral_and_the_uncertainty(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "src", z_positions(1))
    referred = ScoredScan("scan_0123456789abcdef", "v-000000000001", 0.48, 0.5, "refer", "1", 0.0712,
                          "probability near the threshold", "temperature", 1.7)
    sr = pydicom.dcmread(write_score_outputs(tmp_path / "out", read_source_headers(paths), referred, None, b"k").sr)
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert items["Decision at the operating point"].TextValue == "refer"
    assert items["Reason for referral"].TextValue == "probability near the threshold"
    spread = items["Ensemble uncertainty (std of the fold models' probabilities)"].MeasuredValueSequence[0]
    assert float(spread.NumericValue) == 0.0712
    ood = items["Out-of-distribution score (above 1: outside the training data)"].MeasuredValueSequence[0]
    assert float(ood.NumericValue) == 1.7
    assert items["Probability calibration"].TextValue == "temperature scaling fitted on pooled out-of-fold predictions"
    plain = pydicom.dcmread(write_score_outputs(tmp_path / "o2", read_source_headers(paths), SCORED, None, b"k").sr)
    meanings = [item.ConceptNameCodeSequence[0].CodeMeaning for item in plain.ContentSequence]
    assert "Reason for referral" not in meanings and not any(m.startswith("Out-of-distribution") for m in meanings)
