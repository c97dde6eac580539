"""Scoring with the champion: a table of pseudonymous scores, overlays, idempotent, re-scored after a promotion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.evaluate.recalibration import Recalibration
from pipeline.evaluate.referral import REASON_BAND, REASON_UNCERTAINTY, ReferralLimits
from pipeline.layout import Workdir
from pipeline.registry import Registry
from pipeline.scoring import score_scans
from pipeline.scoring.score import Champion, score_columns
from pipeline.scoring.table import SCORE_COLUMNS


def test_scores_are_idempotent_and_follow_the_champion(
    reported_workdir: tuple[Path, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(reported_workdir[0], workdir, ignore=shutil.ignore_patterns("checkpoint.pt", "registry", "scoring"))
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    new = catalog[(catalog["split"] == "test") & (catalog["dims"] == 2)].head(4)
    with pytest.raises(UserInputError, match="no champion"):
        score_scans(workdir, new)
    registry = Registry(workdir)
    first = registry.register()
    registry.promote(first.version, "test")
    result = score_scans(workdir, new)
    assert len(result.scores) == 4 and result.n_skipped == 0
    table = pd.read_parquet(result.table)
    assert list(table.columns) == SCORE_COLUMNS == [
        "scan_id", "patient_id", "study_id", "probability", "raw_probability", "uncertainty", "decision",
        "refer_reason", "ood_score", "ood_flags", "threshold", "model_version"]
    assert table["scan_id"].str.startswith("scan_").all() and table["patient_id"].str.startswith("pat_").all()
    assert table["study_id"].str.startswith("stu_").all() and table["model_version"].eq(first.version).all()
    threshold = first.record["operating_point"]["threshold"]
    assert first.record["recalibration"]["method"] == "temperature" and first.record["referral"]["band"] is not None
    called = table[table["decision"] != "refer"]
    assert ((called["probability"] >= threshold) == (called["decision"] == "positive")).all()
    assert (table["refer_reason"] != "").eq(table["decision"] == "refer").all()
    assert (table["uncertainty"] >= 0).all()
    flagged = table["ood_flags"] != ""  # out of distribution: referred, with that reason
    assert (table.loc[flagged, "decision"] == "refer").all()
    assert table.loc[flagged, "refer_reason"].str.contains("out of distribution: ").all()
    recal = Recalibration.from_dict(first.record["recalibration"])
    assert not np.allclose(table["probability"], table["raw_probability"]) or recal.is_identity
    for scan_id in table["scan_id"]:
        assert (workdir / "scoring" / "overlays" / f"{scan_id}_{first.version}.png").exists()
    stamp = result.table.stat().st_mtime_ns
    again = score_scans(workdir, new)
    assert again.scores.empty and again.n_skipped == 4 and result.table.stat().st_mtime_ns == stamp
    # a new champion scores the same scans again; the old rows stay for audit
    second = "v-second000000"
    shutil.copytree(Workdir(workdir).version(first.version).root, Workdir(workdir).version(second).root)
    # ... here a version registered before calibration and referral: identity calibration, no referral
    files = Workdir(workdir).version(second)
    record = json.loads(files.record.read_text())
    old = {k: v for k, v in record.items() if k not in ("recalibration", "referral")}
    files.record.write_text(json.dumps({**old, "version": second}))
    metrics = json.loads(files.evaluation_file("metrics.json").read_text())
    for key in ("recalibration", "referral"):
        metrics.pop(key)
    files.evaluation_file("metrics.json").write_text(json.dumps(metrics))
    registry.promote(second, "test promotion")
    with caplog.at_level(logging.WARNING, logger="pipeline.scoring.score"):
        rescored = score_scans(workdir, new, overlays=False)
    assert len(rescored.scores) == 4 and (rescored.scores["model_version"] == second).all()
    assert np.allclose(rescored.scores["probability"], rescored.scores["raw_probability"])
    assert (rescored.scores["decision"] != "refer").all() and "no recalibration or referral limits" in caplog.text
    assert len(pd.read_parquet(result.table)) == 8


def test_score_columns_calibrate_each_member_then_average_and_refer_with_reasons() -> None:
    champion = Champion(
        "v-test", [], 0.5, ["0", "1"], Recalibration("temperature", slope=2.0),
        ReferralLimits(0.1, 0.5, (0.45, 0.55), 0.1),
    )
    raw = np.array([[0.9, 0.9], [0.5, 0.52], [0.99, 0.3], [0.1, 0.12]])  # confident, near, spread, confident
    columns = score_columns(champion, raw)
    calibrated = Champion("v", [], 0.5, ["0", "1"], Recalibration("temperature", slope=2.0)).recalibration.apply(raw)
    assert np.allclose(columns["probability"], calibrated.mean(axis=1))  # calibrate, then average
    assert np.allclose(columns["uncertainty"], calibrated.std(axis=1)) and np.allclose(
        columns["raw_probability"], raw.mean(axis=1))
    assert columns["decision"].tolist() == ["positive", "refer", "refer", "negative"]
    assert columns["refer_reason"] == ["", REASON_BAND, REASON_UNCERTAINTY, ""]

    class Flag:  # what the out-of-distribution hook returns per scan
        def __init__(self, score: float, flags: tuple[str, ...]) -> None:
            self.score, self.flags = score, flags

    outcomes = [Flag(3.0, ("wrong_modality", "intensity_out_of_range")), Flag(0.2, ()), Flag(0.1, ()), Flag(0.3, ())]
    with_ood = score_columns(champion, raw, outcomes)
    assert with_ood["decision"].tolist() == ["refer", "refer", "refer", "negative"]
    assert with_ood["refer_reason"][0] == "out of distribution: wrong_modality, intensity_out_of_range"
    assert with_ood["ood_flags"][0] == "wrong_modality,intensity_out_of_range" and with_ood["ood_score"][1] == 0.2
    no_referral = score_columns(Champion("v", [], 0.5, ["0", "1"]), raw)  # an old version: identity, no referral
    assert np.allclose(no_referral["probability"], raw.mean(axis=1)) and "refer" not in no_referral["decision"]
