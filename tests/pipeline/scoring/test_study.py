"""Scoring an inbox study: ingest with quarantine, scores, overlays and DICOM outputs for a PACS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pipeline.cli import main
from pipeline.scoring.study import score_study
from tests.conftest import make_inbox


def test_a_study_is_scored_into_the_table_and_a_pacs_ready_sr_and_sc(champion_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    inbox = make_inbox(tmp_path, per_split=1)
    study = sorted(inbox.iterdir())[0]
    source = pydicom.dcmread(next(study.iterdir()))
    (study / "truncated.dcm").write_bytes(b"DICM" + b"\0" * 10)  # an unreadable file rides along
    before = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    outbox = tmp_path / "outbox"
    done = score_study(workdir, study, "inbox_test", outbox)
    assert done.n_scans == 1 and len(done.scores) == 1 and done.n_skipped == 0
    assert done.quarantine_by_reason == {"not_dicom": 1}  # quarantined with a reason; the study is still scored
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == before  # the inbox is never modified
    row = done.scores.iloc[0]
    assert row["scan_id"].startswith("scan_") and row["model_version"] == done.model_version
    sr_path, sc_path = sorted(done.dicom_outputs)[::-1]
    assert sr_path.name == f"{row['scan_id']}_{done.model_version}_sr.dcm" and sc_path.name.endswith("_sc.dcm")
    sr = pydicom.dcmread(sr_path)
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID  # filed into the study
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert items["Algorithm Version"].TextValue == done.model_version
    assert float(items["Probability of class 1"].MeasuredValueSequence[0].NumericValue) == pytest.approx(
        row["probability"], abs=1e-5)  # the calibrated probability
    assert items["Probability calibration"].TextValue.startswith("temperature scaling")
    assert items["Decision at the operating point"].TextValue == row["decision"] in ("positive", "negative", "refer")
    spread = items["Ensemble uncertainty (std of the fold models' probabilities)"]
    assert float(spread.MeasuredValueSequence[0].NumericValue) == pytest.approx(row["uncertainty"], abs=1e-5)
    assert ("Reason for referral" in items) == (row["decision"] == "refer")
    sc = pydicom.dcmread(sc_path)
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.pixel_array.ndim == 3 and sc.pixel_array.shape[2] == 3 and sc.pixel_array.std() > 0
    # the same study again: nothing is scored or written twice
    stamp = sr_path.stat().st_mtime_ns
    again = score_study(workdir, study, "inbox_test", outbox)
    assert again.scores.empty and again.n_skipped == 1 and again.dicom_outputs == []
    assert sr_path.stat().st_mtime_ns == stamp and len(pd.read_parquet(workdir / "scoring" / "scores.parquet")) == 1


def test_cli_scores_every_inbox_study_once(champion_workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    inbox = make_inbox(tmp_path, per_split=1)
    (inbox / "notes.txt").write_text("loose file outside any study folder")
    assert main(["score", str(inbox), "--workdir", str(workdir), "--out", str(tmp_path / "out"), "--no-overlays"]) == 0
    out = capsys.readouterr().out
    assert "3 studies with champion v-" in out and "3 scans scored" in out and "1 loose files" in out
    assert "MRN" not in out  # study folders are named by pseudonyms
    assert len(list((tmp_path / "out").glob("*_sr.dcm"))) == 3 and not list((tmp_path / "out").glob("*_sc.dcm"))
    assert main(["score", str(inbox), "--workdir", str(workdir)]) == 0
    assert "0 scans scored, 3 already scored" in capsys.readouterr().out
    assert main(["score", str(tmp_path / "nowhere"), "--workdir", str(workdir)]) == 2


def test_a_dicom_output_that_cannot_be_made_does_not_stop_the_scores(
    champion_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pipeline.scoring.study as study_module

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("header value DOE^JANE is not allowed")

    monkeypatch.setattr(study_module, "write_score_outputs", broken)
    workdir = tmp_path / "w"
    shutil.copytree(champion_workdir, workdir)
    study = sorted(make_inbox(tmp_path, per_split=1).iterdir())[0]
    done = score_study(workdir, study, "inbox_broken", tmp_path / "out", overlays=False)
    assert len(done.scores) == 1 and done.dicom_outputs == []
    assert done.dicom_failures == {done.scores.iloc[0]["scan_id"]: "ValueError"}
    assert "ValueError" in caplog.text and "DOE" not in caplog.text  # the message may quote headers: not logged
