"""Evaluation: patient-grouped cross-validation with a held-out test set, and review-board statistics
(point metrics, patient-level bootstrap CIs, DeLong, operating point, calibration, subgroups, plots)."""

from __future__ import annotations

from pipeline.evaluate.crossval import FoldRun, train_fold
from pipeline.evaluate.evaluation import Evaluation, EvaluationSettings, cross_validate, evaluate_cv
from pipeline.evaluate.folds import CVSettings, Folds, load_folds, make_folds

__all__ = [
    "CVSettings",
    "Evaluation",
    "EvaluationSettings",
    "FoldRun",
    "Folds",
    "cross_validate",
    "evaluate_cv",
    "load_folds",
    "make_folds",
    "train_fold",
]
