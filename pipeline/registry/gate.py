"""The promotion gate: a challenger replaces the champion only if it is not worse, statistically.

Non-inferiority on pooled out-of-fold AUROC, both models scored on the same scans: the lower bound
of the 95% patient-level bootstrap CI of (challenger - champion) must exceed ``-delta``. The
difference is paired: each resample draws patients once and scores both models on them, so the
models' shared case difficulty cancels (:mod:`pipeline.evaluate.paired`). Every saliency sanity
check must also have passed, and the challenger must beat the pixel baseline of its own evaluation
(``metrics.json["baseline"]["beats_baseline"]``: its pooled out-of-fold AUROC is above the
baseline's, :mod:`pipeline.evaluate.baseline`). With no champion, the sanity checks and the baseline
are enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import is_positive, probability_column
from pipeline.evaluate.paired import paired_auroc_difference


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def baseline_refusal(baseline: dict[str, Any] | None) -> str | None:
    """Why a challenger is refused for not beating its pixel baseline, or None when it is not.

    A ``metrics.json`` without a ``baseline`` block (versions evaluated before the baseline existed)
    or with a baseline that could not be fitted (``{"note": ...}``, e.g. a multi-class task) is not
    refused for this reason.
    """
    if not baseline or "beats_baseline" not in baseline or baseline["beats_baseline"]:
        return None
    pooled = baseline["difference"]["oof"]
    ci = pooled.get("ci")
    interval = "" if ci is None else f", paired bootstrap CI {ci[0]:+.3f} to {ci[1]:+.3f}"
    return (
        f"does not beat the pixel baseline: OOF AUROC {pooled['model_auroc']:.2f} vs {pooled['baseline_auroc']:.2f} "
        f"for {baseline.get('method', 'the baseline')} (difference {pooled['auroc_difference']:+.3f}{interval})"
    )


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
    baseline: dict[str, Any] | None = None,
    require_beats_baseline: bool = True,
) -> GateDecision:
    """Decide on a challenger from its OOF predictions (``scan_id``, ``patient_id``, ``label``,
    ``prob_<positive>``), the champion's (None when there is none), its ``sanity.json`` and the
    ``baseline`` block of its ``metrics.json``.

    A challenger that does not beat its pixel baseline is refused (:func:`baseline_refusal`), unless
    ``require_beats_baseline`` is False; a ``baseline`` of None (a ``metrics.json`` from before the
    baseline existed) or a ``{"note": ...}`` block (no baseline could be fitted) is not refused for it.
    """
    failed = sorted(m for m, e in sanity.get("methods", {}).items() if not e.get("passed"))
    if not sanity.get("methods"):
        return GateDecision(False, "no saliency sanity checks were run for the challenger")
    if failed:
        return GateDecision(False, f"saliency sanity check failed for {', '.join(failed)}", {"failed_methods": failed})
    refusal = baseline_refusal(baseline) if require_beats_baseline else None
    if refusal is not None:
        pooled = (baseline or {})["difference"]["oof"]
        figures = {
            "model_oof_auroc": pooled["model_auroc"],
            "baseline_oof_auroc": pooled["baseline_auroc"],
            "baseline_auroc_difference": pooled["auroc_difference"],
            "baseline_difference_ci": pooled.get("ci"),
        }
        return GateDecision(False, refusal, figures)
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
