"""Recalibration: temperature and Platt scaling fitted on out-of-fold probabilities, kept as a dict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from pipeline.errors import UserInputError
from pipeline.evaluate.calibration import calibration
from pipeline.evaluate.recalibration import Recalibration, fit_recalibration, negative_log_likelihood


def _overconfident(n: int = 4000, temperature: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and a model reporting sigmoid(T z): temperature scaling must find T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < expit(z)).astype(int)
    return y, expit(temperature * z)


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_ece_and_nll() -> None:
    y, p = _overconfident()
    fit = fit_recalibration(y, p, "temperature")
    assert fit.method == "temperature" and fit.temperature == pytest.approx(2.5, rel=0.08)
    calibrated = fit.apply(p)
    assert calibration(y, calibrated).ece < calibration(y, p).ece / 2
    assert negative_log_likelihood(y, calibrated) < negative_log_likelihood(y, p)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(p, kind="stable"))  # ranking kept
    assert fit.apply(np.array([0.5]))[0] == pytest.approx(0.5)  # temperature keeps 0.5 in place


def test_platt_scaling_recovers_slope_and_intercept() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 6000)
    y = (rng.random(len(z)) < expit(0.5 * z - 0.7)).astype(int)
    fit = fit_recalibration(y, expit(z), "platt")
    assert fit.slope == pytest.approx(0.5, abs=0.06) and fit.intercept == pytest.approx(-0.7, abs=0.12)
    assert fit.to_dict()["params"] == {"slope": fit.slope, "intercept": fit.intercept}


def test_apply_is_monotone_bounded_and_the_dict_round_trips() -> None:
    grid = np.concatenate([[0.0, 1.0], np.linspace(1e-9, 1 - 1e-9, 501)])
    for fit in (Recalibration("temperature", slope=1 / 0.4), Recalibration("platt", slope=0.8, intercept=-1.3)):
        out = fit.apply(np.sort(grid))
        assert np.all(np.diff(out) >= 0) and np.all((out >= 0) & (out <= 1))
        assert Recalibration.from_dict(fit.to_dict()) == fit
    assert Recalibration.from_dict({"method": "temperature", "params": {"temperature": 2.0}}).slope == 0.5
    assert Recalibration.from_dict(None).is_identity  # a version without a fit: the identity
    p = np.array([0.0, 0.3, 1.0])
    assert np.array_equal(fit_recalibration(np.array([0, 1, 1]), p, "none").apply(p), p)


def test_a_fit_needs_both_classes_and_a_known_method() -> None:
    with pytest.raises(UserInputError, match="both classes"):
        fit_recalibration(np.ones(5), np.linspace(0.1, 0.9, 5))
    with pytest.raises(UserInputError, match="one of"):
        fit_recalibration(np.array([0, 1]), np.array([0.2, 0.8]), "isotonic")


def test_a_platt_fit_that_would_reverse_the_ranking_falls_back_to_the_identity() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(500)
    y = (rng.random(500) < 1 - p).astype(int)  # anti-predictive scores
    fit = fit_recalibration(y, p, "platt")
    assert fit.is_identity and "identity" in fit.note and fit.to_dict()["note"] == fit.note
    assert logit(0.3) == pytest.approx(logit(fit.apply(np.array([0.3]))[0]))
