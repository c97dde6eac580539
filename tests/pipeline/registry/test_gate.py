"""The promotion gate: worse challengers are rejected, equal or better ones accepted, sanity failures block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.registry.gate import gate_challenger, paired_auroc_difference

PASSING = {"methods": {"integrated_gradients": {"passed": True}, "gradcam": {"passed": True}}}


def _oof(seed: int, signal: float, n_patients: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"pat_{i}" for i in range(n_patients)], sizes)
    labels = np.repeat(rng.integers(0, 2, n_patients), sizes)
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(len(labels))], "patient_id": patients, "label": labels})


def _scored(frame: pd.DataFrame, signal: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logit = signal * (frame["label"].to_numpy() - 0.5) + rng.normal(0, 1, len(frame))
    return frame.assign(prob_1=1 / (1 + np.exp(-logit)))


def test_clearly_worse_challenger_is_rejected() -> None:
    base = _oof(0, 0)
    decision = gate_challenger(_scored(base, 0.5, 1), _scored(base, 3.0, 2), PASSING)
    assert not decision.passed and "not shown non-inferior" in decision.reason
    assert decision.figures["difference_ci"][1] < 0


def test_equal_or_better_challenger_is_accepted() -> None:
    base = _oof(0, 0)
    champion = _scored(base, 2.0, 2)
    assert gate_challenger(champion.copy(), champion, PASSING).passed  # the same model: difference 0, CI [0, 0]
    better = gate_challenger(_scored(base, 3.0, 5), champion, PASSING)
    assert better.passed and better.figures["auroc_difference"] > 0


def test_sanity_failure_blocks_even_a_better_model_and_first_model_needs_only_sanity() -> None:
    base = _oof(0, 0)
    failing = {"methods": {"integrated_gradients": {"passed": True}, "saliency": {"passed": False}}}
    decision = gate_challenger(_scored(base, 3.0, 5), _scored(base, 1.0, 2), failing)
    assert not decision.passed and "saliency" in decision.reason
    first = gate_challenger(_scored(base, 1.0, 5), None, PASSING)
    assert first.passed and "no champion" in first.reason
    assert not gate_challenger(_scored(base, 1.0, 5), None, failing).passed


def test_paired_difference_is_narrower_than_unpaired_intervals() -> None:
    frame = _scored(_oof(3, 0), 2.0, 1)
    other = _scored(frame, 2.0, 9)["prob_1"].to_numpy()
    difference, ci = paired_auroc_difference(frame["label"].to_numpy(), frame["prob_1"].to_numpy(), other,
                                             frame["patient_id"].to_numpy(), n_resamples=500)
    assert ci[0] <= difference <= ci[1] and ci[1] - ci[0] < 0.2


def _baseline(model: float, baseline: float, ci: list[float]) -> dict:
    pooled = {"model_auroc": model, "baseline_auroc": baseline, "auroc_difference": model - baseline, "ci": ci}
    return {"method": "logistic regression on downsampled raw pixels", "difference": {"oof": pooled, "test": None},
            "beats_baseline": model > baseline, "shown_to_beat": ci[0] > 0, "statement": "..."}


def test_a_model_that_does_not_beat_its_pixel_baseline_is_refused() -> None:
    base = _oof(0, 0)
    losing = _baseline(0.61, 0.70, [-0.15, -0.03])
    decision = gate_challenger(_scored(base, 3.0, 5), None, PASSING, baseline=losing)
    assert not decision.passed
    assert decision.reason.startswith("does not beat the pixel baseline: OOF AUROC 0.61 vs 0.70")
    assert decision.figures["baseline_auroc_difference"] == pytest.approx(-0.09)
    champion = _scored(base, 1.0, 2)  # refused before any comparison with a (weaker) champion
    assert not gate_challenger(_scored(base, 3.0, 5), champion, PASSING, baseline=losing).passed
    assert gate_challenger(_scored(base, 3.0, 5), None, PASSING, baseline=losing, require_beats_baseline=False).passed


def test_a_model_above_its_baseline_or_without_one_is_not_refused_for_it() -> None:
    base = _oof(0, 0)
    not_shown = _baseline(0.74, 0.72, [-0.03, 0.07])  # above, though not shown to be: beats_baseline holds
    assert gate_challenger(_scored(base, 1.0, 5), None, PASSING, baseline=not_shown).passed
    for old in (None, {}, {"note": "the pixel baseline is computed for binary tasks only"}):
        assert gate_challenger(_scored(base, 1.0, 5), None, PASSING, baseline=old).passed
