"""Referral limits pre-specified on out-of-fold predictions, and what evaluate_cv records about them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from pipeline.evaluate import EvaluationSettings, evaluate_cv
from pipeline.evaluate.referral import (
    REASON_BAND,
    REASON_UNCERTAINTY,
    ReferralLimits,
    decisions,
    fit_referral,
    outcome,
    referral_curve,
)
from pipeline.evaluate.splits import TEST
from pipeline.layout import Workdir
from tests.pipeline.evaluate.test_evaluation import _workdir


def _oof(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, calibrated probabilities and a spread that is larger where the call is harder."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < expit(z)).astype(int)
    u = np.abs(rng.normal(0, 0.05, n)) + 0.1 * np.exp(-np.abs(z))
    return y, expit(z), u


@pytest.mark.parametrize("rate", [0.05, 0.10, 0.25])
def test_limits_refer_the_target_rate_of_oof_scans_half_by_band_half_by_spread(rate: float) -> None:
    y, p, u = _oof()
    limits = fit_referral(p, u, threshold=0.4, target_rate=rate)
    assert limits.band is not None and limits.band[0] <= 0.4 <= limits.band[1]
    assert limits.oof_rate == pytest.approx(rate, abs=0.002)
    result = outcome(y, p, u, limits)
    assert result["rate"] == limits.oof_rate
    assert result["referred_by"]["band"] == round(rate / 2 * len(p))
    assert result["n_referred"] - result["referred_by"]["band"] == pytest.approx(round(rate / 2 * len(p)), abs=1)
    assert result["accuracy_non_referred"] > result["accuracy_all"] > result["accuracy_referred"]


def test_without_a_spread_the_band_takes_the_whole_budget_and_rate_zero_refers_nothing() -> None:
    _, p, _ = _oof()
    limits = fit_referral(p, None, threshold=0.5, target_rate=0.1)
    assert limits.max_uncertainty is None and limits.oof_rate == pytest.approx(0.1, abs=0.002)
    none = fit_referral(p, np.full(len(p), np.nan), threshold=0.5, target_rate=0.1)
    assert none.max_uncertainty is None and none.band == limits.band
    assert fit_referral(p, p, threshold=0.5, target_rate=0.0).reasons(p, p) == [[] for _ in p]


def test_decisions_and_reasons() -> None:
    limits = ReferralLimits(0.1, 0.5, (0.45, 0.55), 0.2, 0.1)
    p = np.array([0.9, 0.1, 0.5, 0.52, 0.9])
    u = np.array([0.05, 0.05, 0.05, 0.3, np.nan])
    reasons = limits.reasons(p, u)
    assert reasons == [[], [], [REASON_BAND], [REASON_BAND, REASON_UNCERTAINTY], []]  # NaN spread never refers
    assert decisions(p, 0.5, reasons).tolist() == ["positive", "negative", "refer", "refer", "positive"]
    assert ReferralLimits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits


def test_the_curve_runs_from_no_referral_to_half_and_applies_oof_limits_to_test() -> None:
    oof, test = _oof(seed=1), _oof(400, seed=2)
    curve = referral_curve(oof, test, threshold=0.5)
    assert [c["target_rate"] for c in curve][:: 25] == [0.0, 0.25, 0.5]
    assert curve[0]["oof"]["rate"] == 0 and curve[0]["band"] is None
    assert curve[-1]["oof"]["rate"] == pytest.approx(0.5, abs=0.002)
    assert curve[-1]["oof"]["accuracy"] > curve[0]["oof"]["accuracy"]
    assert 0.3 < curve[-1]["test"]["rate"] < 0.7  # limits fitted on OOF, not on the test set


def _with_insample_rows(workdir: Path, seed: int = 3) -> None:
    """Each synthetic fold model also scores the other folds' scans (role insample), as crossval does."""
    rng = np.random.default_rng(seed)
    folds = pd.read_parquet(Workdir(workdir).folds_table)
    catalog = pd.read_parquet(Workdir(workdir).catalog).set_index("scan_id")
    for k in range(3):
        path = Workdir(workdir).fold(k).predictions
        rows = folds[(folds["fold"] != k) & (folds["fold"] != TEST)]
        label = catalog.loc[rows["scan_id"], "label"].to_numpy()
        p = expit(rng.normal(0, 1, len(rows)) + np.where(label == 1, 1.5, -1.5))
        extra = pd.DataFrame({
            "scan_id": rows["scan_id"].to_numpy(), "patient_id": catalog.loc[rows["scan_id"], "patient_id"].to_numpy(),
            "label": label, "fold": rows["fold"].to_numpy(), "role": "insample", "prob_0": 1 - p, "prob_1": p})
        pd.concat([pd.read_parquet(path), extra], ignore_index=True).to_parquet(path)


def test_evaluate_cv_calibrates_then_pre_specifies_threshold_and_referral_on_oof(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    _with_insample_rows(workdir)
    m = evaluate_cv(workdir, EvaluationSettings(n_resamples=100, referral_rate=0.2)).metrics
    recal = m["recalibration"]
    assert recal["method"] == "temperature" and recal["fitted_on"] == "pooled out-of-fold"
    assert m["operating_point"]["scale"].startswith("calibrated")
    for part in ("oof", "test"):
        assert m["calibration_after"][part]["ece"] >= 0 and m["calibration_before"][part]["ece"] >= 0
    assert m["calibration_after"]["oof"]["ece"] <= m["calibration_before"]["oof"]["ece"] + 1e-9
    referral = m["referral"]
    assert referral["target_rate"] == 0.2 and referral["oof_rate"] == pytest.approx(0.2, abs=0.01)
    assert referral["max_uncertainty"] is not None and referral["test"]["n_scans"] == m["test"]["n_scans"]
    assert any(c["target_rate"] == 0.2 for c in referral["curve"])
    oof = pd.read_parquet(Workdir(workdir).oof_predictions)
    test = pd.read_parquet(Workdir(workdir).test_predictions)
    assert oof["uncertainty"].notna().all() and (oof["prob_1"] != oof["raw_prob_1"]).any()
    members = test[["member_0", "member_1", "member_2"]].to_numpy()
    assert np.allclose(test["prob_1"], members.mean(axis=1)) and np.allclose(test["uncertainty"], members.std(axis=1))
    assert m["test"]["auroc"] == pytest.approx(  # temperature scaling keeps each member's ranking
        evaluate_cv(workdir, EvaluationSettings(n_resamples=100, calibration="none")).metrics["test"]["auroc"], abs=0.03)
    for name in ("reliability", "referral"):
        assert Workdir(workdir).plot(name).read_bytes()[:4] == b"\x89PNG"
