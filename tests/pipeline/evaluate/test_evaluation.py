"""Pooling fold predictions into metrics.json: the operating point, multi-class, subgroups, staleness.

Predictions are synthetic here (the trainer has its own tests); ``test_cross_validate_end_to_end``
checks the real thing on the tiny work folder (the session's ``reported_workdir``, which ran it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.evaluate import CVSettings, EvaluationSettings, cross_validate, evaluate_cv, make_folds
from pipeline.evaluate.splits import TEST
from pipeline.layout import Workdir
from tests.conftest import tiny_cv_arguments

FAST = EvaluationSettings(n_resamples=300)


def _catalog(n_patients: int, classes: int, rng: np.random.Generator) -> pd.DataFrame:
    sizes = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"pat_{i:04d}" for i in range(n_patients)], sizes)
    labels = np.repeat(rng.integers(0, classes, n_patients), sizes)
    n = len(patients)
    return pd.DataFrame({
        "scan_id": [f"scan_{i:05d}" for i in range(n)], "patient_id": patients, "label": labels,
        "split": None, "dims": 2, "modality": "US", "manufacturer": rng.choice(["A", "B", "tiny"], n, p=[0.5, 0.47, 0.03]),
        "content_hash": "x", "volume_path": "v",
    })


def _workdir(tmp_path: Path, classes: int = 2, n_patients: int = 160, seed: int = 0) -> Path:
    """A work folder with a catalogue, folds and synthetic fold predictions (signal in the label)."""
    rng = np.random.default_rng(seed)
    workdir = tmp_path / "w"
    workdir.mkdir(parents=True)
    catalog = _catalog(n_patients, classes, rng)
    catalog.to_parquet(workdir / "catalog.parquet")
    folds = make_folds(workdir, CVSettings(n_folds=3, seed=seed))
    frame = folds.frame
    for k in range(3):
        rows = frame[(frame["fold"] == k) | (frame["fold"] == TEST)]
        table = pd.DataFrame({"scan_id": rows["scan_id"], "patient_id": rows["patient_id"], "label": rows["label"],
                              "fold": rows["fold"], "role": np.where(rows["fold"] == TEST, "test", "oof")})
        logits = rng.normal(0, 1, (len(rows), classes))
        logits[np.arange(len(rows)), rows["label"].to_numpy()] += 1.5
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        for c in range(classes):
            table[f"prob_{c}"] = probs[:, c]
        target = Workdir(workdir).fold(k)
        target.root.mkdir(parents=True)
        table.to_parquet(target.predictions)
        target.record.write_text(json.dumps({
            "fold": k, "model_id": f"m{k}", "folds_hash": folds.folds_hash, "settings_hash": "s",
            "classes": [str(c) for c in range(classes)], "best_val_auroc": 0.8}))
    return workdir


def test_metrics_json_has_the_documented_schema_and_files(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    result = evaluate_cv(workdir, FAST)
    m = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    for block in (m["oof"], m["test"]):
        for key in ("auroc", "auroc_ci", "auprc", "sensitivity", "specificity", "threshold", "ece", "brier",
                    "auroc_delong_ci", "calibration_slope", "calibration_intercept", "ppv", "npv", "f1"):
            assert key in block, key
        assert block["auroc_ci"][0] < block["auroc"] < block["auroc_ci"][1]
    assert [f["fold"] for f in m["folds"]] == [0, 1, 2] and all("auroc" in f for f in m["folds"])
    assert m["oof"]["threshold"] == m["test"]["threshold"] == m["operating_point"]["threshold"]
    assert "pre-specified" in m["operating_point"]["statement"]
    for name in ("roc", "pr", "calibration", "confusion_matrix", "forest"):
        assert (workdir / "evaluation" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    oof = pd.read_parquet(workdir / "evaluation" / "oof_predictions.parquet")
    test = pd.read_parquet(workdir / "evaluation" / "test_predictions.parquet")
    assert oof["scan_id"].is_unique and (test["n_models"] == 3).all()
    assert m["oof"]["n_scans"] == len(oof) and result.metrics == m


def test_operating_point_ignores_the_test_set(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    before = evaluate_cv(workdir, FAST).metrics
    rng = np.random.default_rng(9)
    for k in range(3):  # perturb only the held-out test rows: probabilities and labels
        path = Workdir(workdir).fold(k).predictions
        table = pd.read_parquet(path)
        test = table["role"] == "test"
        table.loc[test, "prob_1"] = rng.random(int(test.sum()))
        table.loc[test, "prob_0"] = 1 - table.loc[test, "prob_1"]
        table.loc[test, "label"] = 1 - table.loc[test, "label"]
        table.to_parquet(path)
    after = evaluate_cv(workdir, FAST).metrics
    assert after["operating_point"] == before["operating_point"]
    assert after["oof"] == before["oof"]
    assert after["test"]["auroc"] != before["test"]["auroc"]


def test_target_sensitivity_operating_point(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    m = evaluate_cv(workdir, EvaluationSettings(n_resamples=200, target_sensitivity=0.9)).metrics
    assert m["oof"]["sensitivity"] >= 0.9 and m["operating_point"]["rule"] == "sensitivity >= 0.9"


def test_multiclass_reports_one_vs_rest_and_macro_auroc(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path, classes=3, n_patients=240)
    m = evaluate_cv(workdir, FAST).metrics
    assert m["task"] == "multiclass" and set(m["oof"]["per_class"]) == {"0", "1", "2"}
    assert set(m["baseline"]) == {"note"}
    per_class = [m["oof"]["per_class"][c]["auroc"] for c in "012"]
    assert m["oof"]["macro_auroc"] == pytest.approx(np.mean(per_class))
    low, high = m["oof"]["auroc_ci"]
    assert low < m["oof"]["macro_auroc"] < high
    assert all(m["oof"]["per_class"][c]["auroc_ci"] is not None for c in "012")


def test_subgroups_report_n_and_flag_the_too_small(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    m = evaluate_cv(workdir, EvaluationSettings(n_resamples=200, subgroups=("manufacturer",))).metrics
    rows = {r["value"]: r for r in m["subgroups"]["oof"]["manufacturer"]}
    assert set(rows) == {"A", "B", "tiny"}
    assert rows["A"]["flag"] is None and rows["A"]["auroc_ci"] is not None and rows["A"]["n_patients"] > 0
    assert rows["tiny"]["flag"] == "too_small" and rows["tiny"]["auroc_ci"] is None
    assert "at least 5 of each" in rows["tiny"]["reason"]
    assert sum(r["n_scans"] for r in rows.values()) == m["oof"]["n_scans"]
    with pytest.raises(UserInputError, match="keep-demographics"):
        evaluate_cv(workdir, EvaluationSettings(n_resamples=50, subgroups=("patient_sex",)))


def test_stale_or_missing_fold_models_are_reported(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    shutil.rmtree(Workdir(workdir).fold(1).root)
    with pytest.raises(UserInputError, match="fold 1 has no model"):
        evaluate_cv(workdir, FAST)
    workdir2 = _workdir(tmp_path / "again")
    make_folds(workdir2, CVSettings(n_folds=3, seed=5))  # a new assignment makes every fold model stale
    with pytest.raises(UserInputError, match="older fold assignment"):
        evaluate_cv(workdir2, FAST)


def test_cross_validate_end_to_end(reported_workdir: tuple[Path, dict]) -> None:
    """``cross_validate(workdir, *tiny_cv_arguments())`` on a copy of the tiny work folder (3 folds, 1 epoch,
    32 px): the session's ``reported_workdir`` ran it, so its folder and result are checked here, and a
    second call with the same arguments must change nothing (test_report.py re-runs explain likewise)."""
    workdir, outputs = reported_workdir
    result = outputs["evaluation"]
    folds = pd.read_parquet(workdir / "evaluation" / "folds.parquet")
    oof = pd.read_parquet(workdir / "evaluation" / "oof_predictions.parquet")
    assert set(oof["scan_id"]) == set(folds.loc[folds["fold"] != TEST, "scan_id"])  # every scan scored once, OOF
    assert len({m["model_id"] for m in result.metrics["models"]}) == 3
    for k in range(3):  # fold k's model never trained on fold k or the test set
        card = json.loads((workdir / "models" / result.metrics["models"][k]["model_id"] / "model_card.json").read_text())
        assert card["training_data"]["n_train"] + card["training_data"]["n_val"] == int(
            ((folds["fold"] != k) & (folds["fold"] != TEST)).sum())
    baseline = result.metrics["baseline"]  # the pixel baseline, on the same folds and test set
    assert baseline["input"].startswith("28x28 (area-downsampled from 32x32)")
    assert baseline["oof"]["n_scans"] == len(oof) and baseline["test"]["n_scans"] == result.metrics["test"]["n_scans"]
    pooled = baseline["difference"]["oof"]
    assert pooled["model_auroc"] == pytest.approx(result.metrics["oof"]["auroc"])
    assert pooled["auroc_difference"] == pytest.approx(pooled["model_auroc"] - baseline["oof"]["auroc"])
    assert baseline["beats_baseline"] == (pooled["auroc_difference"] > 0) and "pixel baseline" in baseline["statement"]
    assert json.loads((workdir / "evaluation" / "metrics.json").read_text())["baseline"] == baseline
    stamp = {p: p.stat().st_mtime_ns for p in (workdir / "evaluation").rglob("*") if p.is_file()}
    cross_validate(workdir, *tiny_cv_arguments())
    assert {p: p.stat().st_mtime_ns for p in (workdir / "evaluation").rglob("*") if p.is_file()} == stamp
