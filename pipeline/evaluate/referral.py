"""Referral: a third decision, ``refer``, for the scans a clinician should read without the model's call.

A scan is referred when its calibrated probability lies in a **band** ``[low, high]`` around the
operating-point threshold, or when its **uncertainty** (the std of the fold members' calibrated
probabilities) exceeds ``max_uncertainty``. Otherwise the decision is ``positive`` (probability >=
threshold) or ``negative``. Reasons are :data:`REASON_BAND` and :data:`REASON_UNCERTAINTY`, joined by
``"; "`` when both hold (scoring may add an out-of-distribution reason).

**Pre-specification** (:func:`fit_referral`), on the pooled out-of-fold (OOF) predictions only, for a
target referral rate ``r`` (setting ``referral_rate``, default 10%):

1. the band gets half the budget: the ``round(r/2 * n)`` OOF scans nearest the threshold in rank
   (as many just below it as just above it, shifted inwards at either end of the range); ``low`` and
   ``high`` are the lowest and highest calibrated probability among them (widened to include the
   threshold itself);
2. the uncertainty limit gets the rest: among the OOF scans outside the band, the ``round(r * n) -
   (in band)`` scans of highest spread are referred, and ``max_uncertainty`` is the next spread down
   (a scan is referred when its spread is strictly above it).

So the OOF referral rate is ``r`` (up to ties). Without an OOF spread (see
:mod:`pipeline.evaluate.calibrated`) the band gets the whole budget and there is no uncertainty limit.
The test set is scored with the limits unchanged; its referral rate and its accuracy on non-referred
scans are the honest figures.

>>> limits = fit_referral(np.linspace(0, 1, 101), np.zeros(101), threshold=0.5, target_rate=0.1)
>>> limits.band, round(limits.oof_rate, 2)
((0.48, 0.52), 0.05)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import UserInputError
from pipeline.evaluate.weighted import bootstrap_weights, percentile_ci

POSITIVE, NEGATIVE, REFER = "positive", "negative", "refer"
REASON_BAND = "probability near the threshold"
REASON_UNCERTAINTY = "ensemble uncertainty above its limit"
#: Share of the referral budget that goes to the probability band (the rest to the uncertainty limit).
BAND_SHARE = 0.5
#: Target rates of the referral curve: 0 to 50% in steps of 1%.
CURVE_RATES = tuple(round(0.01 * i, 2) for i in range(51))
RULE = (
    "half of the target rate to a band of calibrated probabilities around the threshold (the out-of-fold "
    "scans nearest it in rank), the rest to the highest ensemble spreads among the other out-of-fold scans"
)


@dataclass(frozen=True)
class ReferralLimits:
    """Pre-specified referral limits: ``band`` (calibrated probabilities, inclusive) or None, and
    ``max_uncertainty`` (refer when the spread is strictly above it) or None; ``oof_rate`` is the
    share of OOF scans they refer."""

    target_rate: float
    threshold: float
    band: tuple[float, float] | None
    max_uncertainty: float | None
    oof_rate: float = float("nan")

    def reasons(self, p: np.ndarray, uncertainty: np.ndarray | None) -> list[list[str]]:
        """Per scan, the referral reasons that hold (empty: not referred). A NaN spread never refers."""
        p = np.asarray(p, dtype=np.float64)
        near = np.zeros(len(p), bool) if self.band is None else (p >= self.band[0]) & (p <= self.band[1])
        spread = np.zeros(len(p), bool)
        if self.max_uncertainty is not None and uncertainty is not None:
            u = np.asarray(uncertainty, dtype=np.float64)
            spread = np.nan_to_num(u, nan=-np.inf) > self.max_uncertainty
        return [
            [r for r, hit in ((REASON_BAND, a), (REASON_UNCERTAINTY, b)) if hit]
            for a, b in zip(near.tolist(), spread.tolist(), strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_rate": self.target_rate,
            "threshold": self.threshold,
            "band": None if self.band is None else list(self.band),
            "max_uncertainty": self.max_uncertainty,
            "oof_rate": self.oof_rate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferralLimits:
        band = d.get("band")
        limit = d.get("max_uncertainty")
        return cls(
            float(d["target_rate"]),
            float(d["threshold"]),
            None if band is None else (float(band[0]), float(band[1])),
            None if limit is None else float(limit),
            float(d.get("oof_rate", float("nan"))),
        )


def decisions(p: np.ndarray, threshold: float, reasons: list[list[str]]) -> np.ndarray:
    """``refer`` where a scan has a reason, else ``positive`` (p >= threshold) or ``negative``."""
    called = np.where(np.asarray(p, dtype=np.float64) >= threshold, POSITIVE, NEGATIVE).astype(object)
    called[[bool(r) for r in reasons]] = REFER
    return called


def fit_referral(p: np.ndarray, uncertainty: np.ndarray | None, threshold: float, target_rate: float) -> ReferralLimits:
    """Limits referring ``target_rate`` of these (OOF) scans; see the module docstring.
    ``uncertainty`` None or all-NaN: the band takes the whole budget. A rate of 0 refers nothing."""
    if not 0 <= target_rate < 1:
        raise UserInputError("the referral rate must be in [0, 1)")
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n == 0:
        raise UserInputError("referral limits need out-of-fold predictions")
    if target_rate == 0:
        return ReferralLimits(0.0, threshold, None, None, 0.0)
    u = None if uncertainty is None else np.asarray(uncertainty, dtype=np.float64)
    with_spread = u is not None and bool(np.isfinite(u).any())
    total = round(target_rate * n)
    k = round(target_rate * BAND_SHARE * n) if with_spread else total
    band = None
    if k > 0:
        ordered = np.sort(p)
        start = min(max(int(np.searchsorted(ordered, threshold)) - k // 2, 0), n - k)
        band = (min(float(ordered[start]), threshold), max(float(ordered[start + k - 1]), threshold))
    limits = ReferralLimits(target_rate, threshold, band, None)
    limit = None
    if with_spread and u is not None:
        outside = np.array([not r for r in limits.reasons(p, None)])
        spreads = np.sort(u[outside & np.isfinite(u)])[::-1]
        more = total - int((~outside).sum())
        if len(spreads) == 0:
            limit = 0.0
        elif more <= 0:
            limit = float(spreads[0])
        else:
            limit = float(spreads[more]) if more < len(spreads) else 0.0
    limits = ReferralLimits(target_rate, threshold, band, limit)
    referred = sum(bool(r) for r in limits.reasons(p, u))
    return ReferralLimits(target_rate, threshold, band, limit, referred / n)


def outcome(
    y: np.ndarray,
    p: np.ndarray,
    uncertainty: np.ndarray | None,
    limits: ReferralLimits,
    groups: np.ndarray | None = None,
    n_resamples: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """What ``limits`` do to a labelled set: referral rate (by reason) and the accuracy, sensitivity
    and specificity of the positive/negative calls on the scans not referred (with a patient-level
    bootstrap CI of that accuracy when ``groups`` and ``n_resamples`` are given)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    reasons = limits.reasons(p, uncertainty)
    referred = np.array([bool(r) for r in reasons], dtype=bool)
    kept = ~referred
    correct = (p >= limits.threshold).astype(int) == y
    n = len(y)
    out: dict[str, Any] = {
        "n_scans": n,
        "n_referred": int(referred.sum()),
        "rate": float(referred.mean()) if n else None,
        "referred_by": {
            "band": sum(REASON_BAND in r for r in reasons),
            "uncertainty": sum(REASON_UNCERTAINTY in r for r in reasons),
        },
        "accuracy_all": float(correct.mean()) if n else None,
        "accuracy_non_referred": _share(correct[kept]),
        "accuracy_non_referred_ci": None,
        "sensitivity_non_referred": _share(correct[kept & (y == 1)]),
        "specificity_non_referred": _share(correct[kept & (y == 0)]),
        "accuracy_referred": _share(correct[referred]),
    }
    if groups is not None and n_resamples > 0 and kept.any():
        draws = []
        for w in bootstrap_weights(np.asarray(groups), n_resamples, seed):
            wk = w * kept
            total = wk.sum(axis=1)
            draws.append(np.where(total > 0, (wk * correct).sum(axis=1) / np.where(total > 0, total, 1), np.nan))
        ci = percentile_ci(np.concatenate(draws), level)
        out["accuracy_non_referred_ci"] = None if ci is None else [ci[0], ci[1]]
    return out


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


def referral_curve(
    oof: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    threshold: float,
    rates: tuple[float, ...] = CURVE_RATES,
) -> list[dict[str, Any]]:
    """Accuracy on non-referred scans against the referral rate: for each target rate, limits fitted
    on OOF (``(y, p, uncertainty)``) and applied unchanged to the test set."""
    curve = []
    for rate in rates:
        limits = fit_referral(oof[1], oof[2], threshold, rate)
        point: dict[str, Any] = {"target_rate": rate, **_limits_only(limits)}
        for name, data in (("oof", oof), ("test", test)):
            if data is None:
                point[name] = None
                continue
            result = outcome(data[0], data[1], data[2], limits)
            point[name] = {"rate": result["rate"], "accuracy": result["accuracy_non_referred"]}
        curve.append(point)
    return curve


def _limits_only(limits: ReferralLimits) -> dict[str, Any]:
    return {"band": None if limits.band is None else list(limits.band), "max_uncertainty": limits.max_uncertainty}


def referral_block(
    oof: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    groups: tuple[np.ndarray, np.ndarray | None],
    threshold: float,
    target_rate: float,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    uncertainty_source: str = "",
) -> dict[str, Any]:
    """``metrics.json["referral"]``: the limits pre-specified on OOF for ``target_rate``, what they do on
    OOF and test, and the curve (OOF and test accuracy on non-referred scans against the rate)."""
    limits = fit_referral(oof[1], oof[2], threshold, target_rate)
    args = (n_resamples, seed, level)
    test_outcome = None if test is None else outcome(*test, limits, groups[1], *args)
    return {
        **limits.to_dict(),
        "rule": RULE if limits.max_uncertainty is not None else "the whole target rate to the probability band",
        "uncertainty": "std (ddof 0) of the fold members' calibrated probabilities",
        "uncertainty_source": uncertainty_source,
        "statement": f"limits pre-specified on the pooled out-of-fold predictions for a {target_rate:.0%} referral "
        "rate, then applied unchanged to the test set",
        "oof": outcome(*oof, limits, groups[0], *args),
        "test": test_outcome,
        "curve": referral_curve(oof, test, threshold, tuple(sorted({*CURVE_RATES, target_rate}))),
    }
