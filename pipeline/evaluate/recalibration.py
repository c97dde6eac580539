"""Recalibrating a binary model's probabilities: temperature scaling (default) or Platt scaling.

Both act on the logit of the positive-class probability, ``z = logit(p)``:

- **temperature** (Guo et al. 2017): ``p' = sigmoid(z / T)``, one scalar ``T > 0`` fitted by
  minimising the negative log-likelihood (NLL). It keeps the ranking (AUROC unchanged) and the
  probability 0.5 where it is, and only sharpens (``T < 1``) or softens (``T > 1``) the scores;
- **platt** (Platt 1999): ``p' = sigmoid(a z + b)``, a logistic regression of the label on ``z``
  (unpenalised), which also shifts the scores. A fitted ``a <= 0`` (the model ranks worse than
  chance on the fitting data) would reverse the ranking: the fit then falls back to the identity,
  with a warning, and says so in :attr:`Recalibration.note`;
- **none**: the identity.

The fit is made on the pooled out-of-fold (OOF) probabilities of the fold models (one model per scan,
a model that never saw it) and applied to each fold model's probability before the ensemble mean
(calibrate, then average: see ``docs/evaluation.md``). Probabilities are clipped to
``[EPS, 1 - EPS]`` before the logit.

>>> r = Recalibration("temperature", slope=0.5)
>>> [round(float(v), 4) for v in r.apply(np.array([0.1, 0.5, 0.9]))]
[0.25, 0.5, 0.75]
>>> Recalibration.from_dict(r.to_dict()) == r
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, logit
from sklearn.linear_model import LogisticRegression

from pipeline.errors import UserInputError

log = logging.getLogger(__name__)

METHODS = ("temperature", "platt", "none")
#: Probabilities are clipped to [EPS, 1 - EPS] before their logit is taken.
EPS = 1e-7
#: Bounds of log T searched by the temperature fit: T in [e^-5, e^5].
LOG_T_BOUNDS = (-5.0, 5.0)
FITTED_ON = "pooled out-of-fold"


@dataclass(frozen=True)
class Recalibration:
    """A fitted map ``p -> sigmoid(slope * logit(p) + intercept)`` (temperature: slope = 1/T, intercept 0).

    ``method`` is one of :data:`METHODS`; ``n_fitted`` the number of scans it was fitted on; ``note``
    a remark on the fit (empty when there is none)."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0
    n_fitted: int = 0
    fitted_on: str = FITTED_ON
    note: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"calibration method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not self.slope > 0:
            raise UserInputError("a recalibration must keep the ranking (slope > 0)")

    @property
    def temperature(self) -> float:
        """``T = 1 / slope`` (meaningful for temperature scaling; 1 for the identity)."""
        return 1.0 / self.slope

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated positive-class probabilities, same shape as ``p``; monotone increasing in ``p``.
        The identity returns ``p`` unchanged (as floats)."""
        p = np.asarray(p, dtype=np.float64)
        if self.is_identity:
            return p.copy()
        z = logit(np.clip(p, EPS, 1 - EPS))
        return np.asarray(expit(self.slope * z + self.intercept), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The record kept in ``metrics.json`` (``"recalibration"``) and the registry version."""
        params: dict[str, float] = {}
        if self.method == "temperature":
            params = {"temperature": self.temperature}
        elif self.method == "platt":
            params = {"slope": self.slope, "intercept": self.intercept}
        out: dict[str, Any] = {
            "method": self.method,
            "params": params,
            "fitted_on": self.fitted_on,
            "n_fitted": self.n_fitted,
            "formula": "p' = sigmoid(slope * logit(p) + intercept), p clipped to [1e-7, 1 - 1e-7]",
            "slope": self.slope,
            "intercept": self.intercept,
        }
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Recalibration:
        """The inverse of :meth:`to_dict`; ``None`` (a record without a fit) is the identity."""
        if not d:
            return cls()
        method, params = str(d.get("method", "none")), d.get("params") or {}
        if "slope" in d:
            slope, intercept = float(d["slope"]), float(d.get("intercept", 0.0))
        elif method == "temperature":
            slope, intercept = 1.0 / float(params["temperature"]), 0.0
        elif method == "platt":
            slope, intercept = float(params["slope"]), float(params["intercept"])
        else:
            slope, intercept = 1.0, 0.0
        return cls(
            method, slope, intercept, int(d.get("n_fitted", 0)), str(d.get("fitted_on", FITTED_ON)), d.get("note", "")
        )


def negative_log_likelihood(y: np.ndarray, p: np.ndarray) -> float:
    """Mean NLL (log loss, natural log) of 0/1 labels ``y`` under probabilities ``p`` (clipped)."""
    z = logit(np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS))
    return _nll(np.asarray(y, dtype=np.float64), z)


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    return float(-np.mean(y * log_expit(z) + (1 - y) * log_expit(-z)))


def fit_recalibration(y: np.ndarray, p: np.ndarray, method: str = "temperature") -> Recalibration:
    """Fit ``method`` (:data:`METHODS`) to 0/1 labels ``y`` and positive-class probabilities ``p``
    (pass the pooled out-of-fold predictions). Both classes must be present unless ``method`` is none."""
    y, p = np.asarray(y).astype(np.float64), np.asarray(p, dtype=np.float64)
    if method not in METHODS:
        raise UserInputError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "none":
        return Recalibration("none", n_fitted=len(y))
    if len(np.unique(y)) < 2:
        raise UserInputError("recalibration needs both classes in the out-of-fold predictions")
    z = logit(np.clip(p, EPS, 1 - EPS))
    if method == "temperature":
        result = minimize_scalar(
            lambda log_t: _nll(y, z * np.exp(-log_t)), bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
        )
        return Recalibration("temperature", slope=float(np.exp(-result.x)), n_fitted=len(y))
    model = LogisticRegression(C=np.inf, solver="lbfgs").fit(z.reshape(-1, 1), y)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope <= 0:
        note = f"Platt fit had slope {slope:.3g} <= 0 (would reverse the ranking): identity used"
        log.warning("recalibration: %s", note)
        return Recalibration("platt", n_fitted=len(y), note=note)
    return Recalibration("platt", slope=slope, intercept=intercept, n_fitted=len(y))
