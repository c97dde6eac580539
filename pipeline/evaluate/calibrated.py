"""Calibrated fold-ensemble predictions of a binary task: the recalibration fitted on the pooled
out-of-fold (OOF) probabilities, applied to every fold model's probability (a "member"), the
ensemble's probability as the mean of its calibrated members and its uncertainty as their spread.

Conventions (the same as scoring, :mod:`pipeline.scoring.score`):

- **calibrate, then average**: the recalibration is fitted on single-model probabilities (each OOF
  scan is scored by the one fold model that never saw it), so it is applied to each member's
  probability, and the ensemble's probability is the mean of the calibrated members. The operating
  point and the referral band are chosen on the calibrated OOF probabilities;
- **uncertainty** is the population standard deviation (ddof 0) of the calibrated member
  probabilities of a scan. On the test set every member is out-of-sample. On an OOF scan only its own
  fold's model is; the other K - 1 members trained on it (their predictions are the fold files' rows
  with role ``insample``, see :mod:`pipeline.evaluate.crossval`), so the OOF spread is not the spread
  a new scan gets: the referral limit fitted on it is checked on the test set, where the realised
  referral rate is reported. Without in-sample rows (fold predictions of an older ScanLens) the OOF
  uncertainty is NaN and referral uses the probability band alone.

Tables (columns beyond the classes' ``prob_<c>``, which hold the calibrated probabilities):
``raw_prob_<c>`` (uncalibrated; the ensemble's mean for the test set), ``uncertainty``, and for the
test set ``n_models`` and ``member_<k>`` (fold ``k``'s model's calibrated positive-class probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.calibration import calibration
from pipeline.evaluate.classes import is_positive, positive_class, probability_column
from pipeline.evaluate.recalibration import Recalibration, fit_recalibration
from pipeline.evaluate.referral import referral_block

#: Roles of the fold prediction rows: the fold's own scans, other folds' scans (trained on), the test set.
OOF, INSAMPLE, TEST = "oof", "insample", "test"


def raw_column(class_name: object) -> str:
    """The column holding the uncalibrated probability of ``class_name``."""
    return f"raw_{probability_column(class_name)}"


def member_column(model_fold: int) -> str:
    """The column holding fold ``model_fold``'s model's calibrated positive-class probability."""
    return f"member_{model_fold}"


@dataclass(frozen=True)
class CalibratedSets:
    """The pooled OOF and test tables with calibrated probabilities (see the module docstring)."""

    oof: pd.DataFrame
    test: pd.DataFrame
    recalibration: Recalibration
    n_models: int

    @property
    def oof_spread_available(self) -> bool:
        return bool(len(self.oof)) and bool(self.oof["uncertainty"].notna().all())


def calibrated_sets(predictions: pd.DataFrame, classes: list[str], method: str) -> CalibratedSets:
    """Fit ``method`` on the pooled OOF positive-class probabilities of ``predictions`` (every fold's
    rows, with ``model_fold`` naming the model) and build the calibrated OOF and test tables."""
    positive = positive_class(classes)
    negative = classes[0]
    column = probability_column(positive)
    n_models = int(predictions["model_fold"].nunique())
    oof = predictions[predictions["role"] == OOF].sort_values("scan_id").reset_index(drop=True)
    recal = fit_recalibration(is_positive(oof["label"], classes), oof[column].to_numpy(), method)
    rows = predictions.assign(calibrated=recal.apply(predictions[column].to_numpy()))

    oof_members = rows[rows["role"].isin((OOF, INSAMPLE))]
    spread = _spread(oof_members, n_models)
    raw = oof[column].to_numpy()
    oof = oof[["scan_id", "patient_id", "fold", "label"]].assign(
        **{
            probability_column(negative): 1 - recal.apply(raw),
            column: recal.apply(raw),
            raw_column(negative): 1 - raw,
            raw_column(positive): raw,
        }
    )
    oof["uncertainty"] = oof["scan_id"].map(spread).astype(np.float64)

    test_rows = rows[rows["role"] == TEST]
    if test_rows.empty:
        test = pd.DataFrame(
            columns=["scan_id", "patient_id", "label", probability_column(negative), column, "n_models", "uncertainty"]
        )
    else:
        test = test_rows.groupby(["scan_id", "patient_id", "label"], as_index=False).agg(
            calibrated=("calibrated", "mean"),
            raw=(column, "mean"),
            n_models=("model_fold", "size"),
            uncertainty=("calibrated", lambda v: float(np.std(v.to_numpy(), ddof=0))),
        )
        test = test.assign(
            **{
                probability_column(negative): 1 - test["calibrated"],
                column: test["calibrated"],
                raw_column(negative): 1 - test["raw"],
                raw_column(positive): test["raw"],
            }
        ).drop(columns=["calibrated", "raw"])
        members = test_rows.pivot_table(index="scan_id", columns="model_fold", values="calibrated", aggfunc="mean")
        for k in members.columns:
            test[member_column(int(k))] = test["scan_id"].map(members[k])
        test = test.sort_values("scan_id").reset_index(drop=True)
    return CalibratedSets(oof, test, recal, n_models)


def _spread(rows: pd.DataFrame, n_models: int) -> pd.Series:
    """Per scan, the std (ddof 0) of its members' calibrated probabilities; NaN unless all ``n_models`` scored it."""
    if rows.empty:
        return pd.Series(dtype=np.float64)
    grouped = rows.groupby("scan_id")["calibrated"]
    spread = grouped.agg(lambda v: float(np.std(v.to_numpy(), ddof=0)))
    return spread.where(grouped.size() == n_models)


def calibration_summary(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """ECE (equal-mass bins), calibration slope and intercept, Brier score, and the reliability bins."""
    cal = calibration(y, p)
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    finite = [v if np.isfinite(v) else None for v in (cal.slope, cal.intercept)]
    return {
        "n_scans": len(y),
        "ece": cal.ece,
        "calibration_slope": finite[0],
        "calibration_intercept": finite[1],
        "brier": float(np.mean((p - y) ** 2)),
        "reliability": {
            "mean_predicted": cal.bin_mean_predicted,
            "observed_rate": cal.bin_observed_rate,
            "count": cal.bin_counts,
        },
    }


def calibration_blocks(sets: CalibratedSets, classes: list[str]) -> dict[str, Any]:
    """``calibration_before`` and ``calibration_after``, each ``{"oof": ..., "test": ... | None}``.

    The OOF "after" block is in-sample for the recalibration (fitted on those scans); the test
    blocks are the honest before/after comparison (the fold ensemble's mean, raw vs calibrated)."""
    positive = positive_class(classes)
    out: dict[str, Any] = {"calibration_before": {}, "calibration_after": {}}
    for part, frame in (("oof", sets.oof), ("test", sets.test)):
        if frame.empty:
            out["calibration_before"][part] = out["calibration_after"][part] = None
            continue
        y = is_positive(frame["label"], classes)
        out["calibration_before"][part] = calibration_summary(y, frame[raw_column(positive)].to_numpy())
        out["calibration_after"][part] = calibration_summary(y, frame[probability_column(positive)].to_numpy())
    return out


def uncertainty_metrics(
    sets: CalibratedSets,
    classes: list[str],
    threshold: float,
    referral_rate: float,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The ``metrics.json`` entries of a binary evaluation for calibration and referral:
    ``recalibration``, ``calibration_before``, ``calibration_after`` and ``referral``."""
    positive = positive_class(classes)

    def triple(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = is_positive(frame["label"], classes)
        return y, frame[probability_column(positive)].to_numpy(), frame["uncertainty"].to_numpy(dtype=np.float64)

    source = (
        f"test: the {sets.n_models} fold models, none of which saw the scan; out-of-fold: the same {sets.n_models} "
        f"models, of which only the scan's own fold model had not trained on it (so the out-of-fold spread is "
        "not the spread of a new scan; the test set's referral rate checks the limit)"
        if sets.oof_spread_available
        else "out-of-fold scans have one model each (no in-sample member predictions): no uncertainty limit"
    )
    oof = triple(sets.oof)
    test = triple(sets.test) if len(sets.test) else None
    groups = (sets.oof["patient_id"].to_numpy(), None if test is None else sets.test["patient_id"].to_numpy())
    return {
        "recalibration": sets.recalibration.to_dict(),
        **calibration_blocks(sets, classes),
        "referral": referral_block(
            (oof[0], oof[1], oof[2] if sets.oof_spread_available else None),
            test,
            groups,
            threshold,
            referral_rate,
            n_resamples,
            seed,
            level,
            source,
        ),
    }
