"""Subgroup analysis: metrics at the pre-specified operating point by any catalogue column.

A subgroup with fewer than ``min_patients`` patients in either class gets no CI and is flagged
``too_small`` with the counts, rather than a number that looks more certain than it is.
``age_band`` is derived from the DICOM ``PatientAge`` (``045Y``) kept with ``--keep-demographics``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluate.summary import binary_block

DERIVED = {"age_band": "patient_age"}


def age_band(age: object, width: int = 20) -> str | None:
    """``"045Y"`` -> ``"40-59"``; months, weeks and days count as age 0. None when missing.

    >>> age_band("045Y"), age_band("006M"), age_band(None)
    ('40-59', '0-19', None)
    """
    if not isinstance(age, str) or len(age) < 2 or not age[:-1].isdigit():
        return None
    years = int(age[:-1]) if age[-1].upper() == "Y" else 0
    low = years // width * width
    return f"{low}-{low + width - 1}"


def with_subgroup_columns(predictions: pd.DataFrame, catalog: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Join the requested catalogue columns (and derived ``age_band``) onto predictions by ``scan_id``."""
    wanted = {DERIVED.get(c, c) for c in columns}
    missing = sorted(c for c in wanted if c not in catalog.columns)
    if missing:
        hint = (
            " (ingest with --keep-demographics for patient_sex/patient_age)"
            if {"patient_sex", "patient_age"} & set(missing)
            else ""
        )
        raise UserInputError(f"subgroup column(s) {', '.join(missing)} not in the catalogue{hint}")
    joined = predictions.merge(
        catalog[["scan_id", *sorted(wanted)]], on="scan_id", how="left", suffixes=("", "_catalog")
    )
    if "age_band" in columns:
        joined["age_band"] = joined["patient_age"].map(age_band)
    return joined


def subgroup_table(
    frame: pd.DataFrame,
    columns: list[str],
    threshold: float,
    min_patients: int = 5,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """For each column, one row per value (missing values as ``"unknown"``): n scans/patients per
    class and the binary metrics with CIs, or a ``too_small`` flag with the reason."""
    table: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        rows = []
        values = frame[column].astype("string").fillna("unknown")
        for value in sorted(values.unique()):
            part = frame[(values == value).to_numpy()]
            y, groups = part["label"].to_numpy().astype(int), part["patient_id"].to_numpy()
            per_class = {c: len(np.unique(groups[y == c])) for c in (0, 1)}
            row: dict[str, Any] = {
                "value": str(value),
                "n_scans": len(part),
                "n_patients": len(np.unique(groups)),
                "n_positive": int(y.sum()),
                "n_negative": int(len(y) - y.sum()),
            }
            if min(per_class.values()) < min_patients:
                row.update(
                    flag="too_small",
                    reason=f"{per_class[1]} positive / {per_class[0]} negative patients; "
                    f"a CI needs at least {min_patients} of each",
                    auroc=None,
                    auroc_ci=None,
                )
            else:
                block = binary_block(
                    y, part["p"].to_numpy(), groups, threshold, n_resamples, seed, with_calibration=False
                )
                row.update(
                    flag=None,
                    **{
                        k: block[k]
                        for k in (
                            "auroc",
                            "auroc_ci",
                            "sensitivity",
                            "sensitivity_ci",
                            "specificity",
                            "specificity_ci",
                            "ppv",
                            "npv",
                        )
                    },
                )
            rows.append(row)
        table[column] = rows
    return table
