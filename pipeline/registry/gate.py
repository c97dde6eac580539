"""The promotion gate: a challenger replaces the champion only if it is not worse, statistically.

Non-inferiority on pooled out-of-fold AUROC, both models scored on the same scans: the lower bound
of the 95% patient-level bootstrap CI of (challenger - champion) must exceed ``-delta``. The
difference is paired: each resample draws patients once and scores both models on them, so the
models' shared case difficulty cancels. Every saliency sanity check must also have passed. With no
champion, passing the sanity checks is enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import is_positive, probability_column
from pipeline.evaluate.weighted import bootstrap_weights, percentile_ci, weighted_auroc


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def paired_auroc_difference(
    y: np.ndarray,
    p_challenger: np.ndarray,
    p_champion: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, tuple[float, float] | None]:
    """(challenger AUROC - champion AUROC, its paired patient-level bootstrap percentile CI)."""
    ones = np.ones((1, len(y)))
    difference = float(weighted_auroc(y, p_challenger, ones)[0] - weighted_auroc(y, p_champion, ones)[0])
    draws = [
        weighted_auroc(y, p_challenger, w) - weighted_auroc(y, p_champion, w)
        for w in bootstrap_weights(groups, n_resamples, seed)
    ]
    return difference, percentile_ci(np.concatenate(draws), level)


def _aligned(challenger: pd.DataFrame, champion: pd.DataFrame, positive: str) -> pd.DataFrame:
    column = probability_column(positive)
    both = challenger[["scan_id", "patient_id", "label", column]].merge(
        champion[["scan_id", column]], on="scan_id", suffixes=("_challenger", "_champion")
    )
    if both.empty:
        raise UserInputError("the challenger and the champion share no out-of-fold scans: they cannot be compared")
    return both


def gate_challenger(
    challenger_oof: pd.DataFrame,
    champion_oof: pd.DataFrame | None,
    sanity: dict[str, Any],
    positive: str = "1",
    delta: float = 0.02,
    n_resamples: int = 2000,
    seed: int = 0,
) -> GateDecision:
    """Decide on a challenger from its OOF predictions (``scan_id``, ``patient_id``, ``label``,
    ``prob_<positive>``), the champion's (None when there is none) and its ``sanity.json``."""
    failed = sorted(m for m, e in sanity.get("methods", {}).items() if not e.get("passed"))
    if not sanity.get("methods"):
        return GateDecision(False, "no saliency sanity checks were run for the challenger")
    if failed:
        return GateDecision(False, f"saliency sanity check failed for {', '.join(failed)}", {"failed_methods": failed})
    if champion_oof is None:
        return GateDecision(True, "no champion yet: the first model that passes the sanity checks becomes champion")
    both = _aligned(challenger_oof, champion_oof, positive)
    y = is_positive(both["label"], [positive])
    column = probability_column(positive)
    difference, ci = paired_auroc_difference(
        y,
        both[f"{column}_challenger"].to_numpy(),
        both[f"{column}_champion"].to_numpy(),
        both["patient_id"].to_numpy(),
        n_resamples,
        seed,
    )
    figures = {
        "auroc_difference": difference,
        "difference_ci": None if ci is None else list(ci),
        "delta": delta,
        "n_scans": len(both),
        "n_patients": int(both["patient_id"].nunique()),
    }
    if ci is None:
        return GateDecision(False, "the AUROC difference has no CI (too few patients of a class)", figures)
    if ci[0] > -delta:
        return GateDecision(
            True,
            f"non-inferior: AUROC difference {difference:+.4f}, 95% CI lower bound {ci[0]:+.4f} > -{delta}",
            figures,
        )
    return GateDecision(
        False,
        f"not shown non-inferior: AUROC difference {difference:+.4f}, 95% CI lower bound {ci[0]:+.4f} <= -{delta}",
        figures,
    )
