"""Patient-grouped folds (property-tested with hypothesis) and calibration statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import UserInputError
from pipeline.evaluate.calibration import calibration
from pipeline.evaluate.splits import TEST, FoldProblem, assign_folds, check_folds


def _scans(sizes: list[int], labels: list[int], with_test_split: bool) -> pd.DataFrame:
    rows = []
    for patient, (size, label) in enumerate(zip(sizes, labels)):
        split = "test" if with_test_split and patient % 5 == 0 else "train"
        rows += [{"scan_id": f"s{patient}_{i}", "patient_id": f"p{patient}", "label": label, "split": split} for i in range(size)]
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=15, max_size=60),
    seed=st.integers(0, 10_000),
    k=st.integers(2, 5),
    with_test_split=st.booleans(),
)
def test_no_patient_is_ever_on_both_sides(sizes: list[int], seed: int, k: int, with_test_split: bool) -> None:
    labels = [i % 2 for i in range(len(sizes))]
    folds = assign_folds(_scans(sizes, labels, with_test_split), n_folds=k, seed=seed)
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert set(folds["fold"]) <= {TEST, *range(k)} and (folds["fold"] == TEST).any()
    assert not [p for p in check_folds(folds) if p.severity == "error"]


def test_catalogue_test_split_is_held_out_and_folds_are_seeded() -> None:
    scans = _scans([2] * 40, [i % 2 for i in range(40)], with_test_split=True)
    a, b = assign_folds(scans, seed=3), assign_folds(scans, seed=3)
    assert a["fold"].tolist() == b["fold"].tolist()
    assert set(a.loc[a["split"] == "test", "fold"]) == {TEST}


def test_check_reports_leaks_and_missing_classes() -> None:
    folds = pd.DataFrame({"patient_id": ["a", "a", "b", "c"], "fold": [0, 1, 1, 0], "label": [1, 1, 1, 0]})
    problems = check_folds(folds)
    assert any(p.severity == "error" and str(p).startswith("error: 1 patient") for p in problems)
    assert any(p.severity == "warning" and "fold 1 has no scan of class(es) [0]" in p.message for p in problems)
    assert [FoldProblem.parse(str(p)) for p in problems] == problems
    with pytest.raises(UserInputError):
        assign_folds(_scans([1, 1, 1], [0, 1, 0], False), n_folds=5)


def test_calibration_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20_000)
    y = rng.uniform(size=p.size) < p  # calibrated by construction
    good = calibration(y, p)
    assert good.ece < 0.02 and good.slope == pytest.approx(1.0, abs=0.05) and good.intercept == pytest.approx(0.0, abs=0.05)
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    bad = calibration(y, overconfident)
    assert bad.ece > 0.05 and bad.slope == pytest.approx(1 / 3, abs=0.05)
    assert sum(bad.bin_counts) == p.size and len(bad.bin_counts) == 10
