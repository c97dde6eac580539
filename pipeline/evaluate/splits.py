"""Patient-grouped splits: a held-out test set first, then stratified group K-fold on the rest.

Every image of a patient lands in the same partition, so no patient is ever on both sides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from pipeline.errors import UserInputError

log = logging.getLogger(__name__)
TEST = -1  # fold value of the held-out test set


def assign_folds(scans: pd.DataFrame, n_folds: int = 5, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Return ``scans`` with a ``fold`` column: -1 for the held-out test set, 0..K-1 otherwise.

    The test set is the catalogue's ``split == "test"`` when present, else a seeded patient-grouped
    ``test_fraction``. A patient with scans in the catalogue's test split is held out whole.
    """
    if n_folds < 2:
        raise UserInputError("cross-validation needs at least 2 folds")
    frame = scans.reset_index(drop=True).copy()
    groups = frame["patient_id"].to_numpy()
    if (frame["split"] == "test").any():
        test_patients = set(frame.loc[frame["split"] == "test", "patient_id"])
        is_test = frame["patient_id"].isin(test_patients).to_numpy()
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        _, test_index = next(splitter.split(frame, groups=groups))
        is_test = np.zeros(len(frame), dtype=bool)
        is_test[test_index] = True
    frame["fold"] = TEST
    pool = frame.index[~is_test]
    n_patients = frame.loc[pool, "patient_id"].nunique()
    if n_patients < n_folds:
        raise UserInputError(f"{n_patients} patients outside the test set cannot fill {n_folds} folds")
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_index) in enumerate(folds.split(frame.loc[pool], frame.loc[pool, "label"], groups[pool])):
        frame.loc[pool[val_index], "fold"] = k
    return frame


@dataclass(frozen=True)
class FoldProblem:
    """One finding of :func:`check_folds`. An ``error`` (a patient in two partitions) invalidates the
    folds; a ``warning`` (a validation fold without some class) can be unavoidable with few patients.
    ``str()`` gives ``"<severity>: <message>"``, the form stored in ``folds.json`` and ``metrics.json``."""

    severity: Literal["error", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"

    @classmethod
    def parse(cls, text: str) -> FoldProblem:
        """The inverse of ``str()``."""
        severity, _, message = text.partition(": ")
        if severity == "error":
            return cls("error", message)
        if severity == "warning":
            return cls("warning", message)
        raise ValueError(f"not a fold problem: {text!r}")


def check_folds(folds: pd.DataFrame) -> list[FoldProblem]:
    """Problems with a fold assignment: patients in two partitions (an error), or validation folds
    missing a class (a warning: it can be unavoidable with few patients). Empty when all is well."""
    problems = []
    spread = folds.groupby("patient_id")["fold"].nunique()
    leaking = spread[spread > 1]
    if len(leaking):
        problems.append(FoldProblem("error", f"{len(leaking)} patient(s) appear in more than one partition"))
    classes = set(folds.loc[folds["fold"] != TEST, "label"])
    for fold, part in folds[folds["fold"] != TEST].groupby("fold"):
        missing = classes - set(part["label"])
        if missing:
            problems.append(
                FoldProblem("warning", f"validation fold {fold} has no scan of class(es) {sorted(missing)}")
            )
    return problems
