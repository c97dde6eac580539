"""Deciding on a challenger: register, gate against the champion, record the decision, promote if it passed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.layout import Workdir
from pipeline.registry import Registry, RegistryEntry
from pipeline.registry.decide import decide_challenger, promote_if_accepted
from pipeline.registry.gate import GateDecision

PASSING = {"methods": {"integrated_gradients": {"passed": True}, "gradcam": {"passed": True}}}
FAILING = {"methods": {"integrated_gradients": {"passed": True}, "gradcam": {"passed": False}}}
N_RESAMPLES = 300


def _scored(signal: float, seed: int, n_patients: int = 200) -> pd.DataFrame:
    """Out-of-fold predictions for the same 200 patients (one scan each); ``signal`` sets how well
    ``prob_1`` separates the labels (seeded, so two calls with one seed are identical)."""
    labels = np.random.default_rng(0).integers(0, 2, n_patients)
    logit = signal * (labels - 0.5) + np.random.default_rng(seed).normal(0, 1, n_patients)
    prob = 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(n_patients)], "patient_id": [f"p{i}" for i in range(n_patients)],
                         "fold": np.arange(n_patients) % 2, "label": labels, "prob_0": 1 - prob, "prob_1": prob})


def _evaluated(workdir: Path, tag: str, oof: pd.DataFrame, sanity: dict[str, Any] | None) -> None:
    """What `evaluate` and `explain` leave behind, made directly: one fold model with a card, metrics,
    the OOF predictions, the folds table and (unless None) ``saliency/sanity.json``."""
    wd = Workdir(workdir)
    model_id = f"resnet50-2d-{tag}"
    model = wd.model(model_id)
    model.root.mkdir(parents=True)
    model.weights.write_bytes(b"weights " + tag.encode())
    model.card.write_text(json.dumps({"model_id": model_id, "dims": 2, "training_data": {"manifest_hash": "m" + tag},
                                      "preprocessing": {"config": {}}}))
    wd.evaluation.mkdir(parents=True, exist_ok=True)
    metrics = {"models": [{"fold": 0, "model_id": model_id}], "settings": {"folds_hash": "f"}, "classes": ["0", "1"],
               "operating_point": {"threshold": 0.5}, "oof": {"auroc": 0.8, "auroc_ci": [0.7, 0.9]}, "test": None}
    wd.metrics.write_text(json.dumps(metrics))
    oof.to_parquet(wd.oof_predictions)
    oof[["scan_id", "patient_id", "fold"]].to_parquet(wd.folds_table)
    if wd.sanity.exists():
        wd.sanity.unlink()
    if sanity is not None:
        wd.sanity.parent.mkdir(parents=True, exist_ok=True)
        wd.sanity.write_text(json.dumps(sanity))


def _decided(workdir: Path, tag: str, oof: pd.DataFrame, sanity: dict[str, Any] | None = PASSING,
             delta: float = 0.02) -> tuple[RegistryEntry, GateDecision]:
    _evaluated(workdir, tag, oof, sanity)
    return decide_challenger(workdir, delta=delta, n_resamples=N_RESAMPLES)


def test_first_challenger_passing_sanity_is_accepted_and_promoted(tmp_path: Path) -> None:
    entry, decision = _decided(tmp_path, "one", _scored(2.0, 1))
    assert decision.passed and "no champion" in decision.reason
    assert entry.status == "registered" and Registry(tmp_path).champion() is None  # deciding does not promote
    record = json.loads(Workdir(tmp_path).decision(entry.version).read_text())
    assert record["passed"] is True and record["version"] == entry.version and record["champion"] is None
    assert record["reason"] == decision.reason and record["delta"] == 0.02
    promoted = promote_if_accepted(tmp_path, entry.version)
    assert promoted.status == "champion" and Registry(tmp_path).champion() == entry.version
    assert promoted.reason == f"gate passed: {decision.reason}"


@pytest.mark.parametrize(("sanity", "reason"), [(FAILING, "sanity check failed for gradcam"),
                                                 (None, "no saliency sanity checks were run")])
def test_a_sanity_failure_is_rejected_with_its_reason_and_never_promoted(tmp_path: Path, sanity: dict[str, Any] | None,
                                                                          reason: str) -> None:
    entry, decision = _decided(tmp_path, "one", _scored(3.0, 1), sanity)
    assert not decision.passed and reason in decision.reason
    assert entry.status == "rejected" and entry.reason == decision.reason
    assert json.loads(Workdir(tmp_path).decision(entry.version).read_text())["passed"] is False
    after = promote_if_accepted(tmp_path, entry.version)
    assert after.status == "rejected" and Registry(tmp_path).champion() is None


def test_a_worse_challenger_is_rejected_and_the_champion_stays(tmp_path: Path) -> None:
    champion, _ = _decided(tmp_path, "good", _scored(3.0, 1))
    promote_if_accepted(tmp_path, champion.version)
    worse, decision = _decided(tmp_path, "worse", _scored(0.3, 2))
    assert worse.version != champion.version
    assert not decision.passed and "not shown non-inferior" in decision.reason
    assert decision.figures["auroc_difference"] < 0 and decision.figures["n_patients"] == 200
    assert json.loads(Workdir(tmp_path).decision(worse.version).read_text())["champion"] == champion.version
    assert promote_if_accepted(tmp_path, worse.version).status == "rejected"
    assert Registry(tmp_path).champion() == champion.version


def test_an_equal_or_better_challenger_replaces_the_champion(tmp_path: Path) -> None:
    first, _ = _decided(tmp_path, "first", _scored(2.0, 1))
    promote_if_accepted(tmp_path, first.version)
    better, decision = _decided(tmp_path, "better", _scored(4.0, 2))
    assert decision.passed and decision.reason.startswith("non-inferior") and decision.figures["auroc_difference"] > 0
    assert promote_if_accepted(tmp_path, better.version).status == "champion"
    statuses = {e.version: e.status for e in Registry(tmp_path).versions()}
    assert statuses == {first.version: "retired", better.version: "champion"}


def test_the_delta_decides_a_small_loss(tmp_path: Path) -> None:
    champion, _ = _decided(tmp_path, "champion", _scored(2.0, 1))
    promote_if_accepted(tmp_path, champion.version)
    _evaluated(tmp_path, "slightly-worse", _scored(1.7, 1), PASSING)
    strict = decide_challenger(tmp_path, delta=0.0, n_resamples=N_RESAMPLES)[1]
    lenient = decide_challenger(tmp_path, delta=0.5, n_resamples=N_RESAMPLES)[1]
    assert not strict.passed and lenient.passed  # same challenger, same figures, different margin
    assert strict.figures["auroc_difference"] == lenient.figures["auroc_difference"] < 0


def test_deciding_again_on_the_champion_or_a_rejected_version(tmp_path: Path) -> None:
    champion, _ = _decided(tmp_path, "one", _scored(2.0, 1))
    promote_if_accepted(tmp_path, champion.version)
    again, decision = decide_challenger(tmp_path, n_resamples=N_RESAMPLES)  # the same evaluation, now champion
    assert again.version == champion.version and decision.passed and decision.reason == "already the champion"
    rejected, _ = _decided(tmp_path, "two", _scored(2.0, 1), FAILING)
    decide_challenger(tmp_path, n_resamples=N_RESAMPLES)
    rejections = [h for h in Registry(tmp_path).history() if h["version"] == rejected.version and h["action"] == "rejected"]
    assert len(rejections) == 1  # a second decision does not reject twice


def test_promote_needs_a_recorded_decision(tmp_path: Path) -> None:
    _evaluated(tmp_path, "one", _scored(2.0, 1), PASSING)
    entry = Registry(tmp_path).register()  # registered, never decided
    with pytest.raises(FileNotFoundError):
        promote_if_accepted(tmp_path, entry.version)
    assert Registry(tmp_path).champion() is None


def test_a_challenger_below_its_pixel_baseline_is_rejected_from_its_metrics(tmp_path: Path) -> None:
    _evaluated(tmp_path, "one", _scored(2.0, 1), PASSING)
    metrics = json.loads(Workdir(tmp_path).metrics.read_text())
    pooled = {"model_auroc": 0.61, "baseline_auroc": 0.70, "auroc_difference": -0.09, "ci": [-0.15, -0.03]}
    metrics["baseline"] = {"method": "logistic regression on downsampled raw pixels", "beats_baseline": False,
                           "difference": {"oof": pooled, "test": None}}
    Workdir(tmp_path).metrics.write_text(json.dumps(metrics))
    allowed = decide_challenger(tmp_path, n_resamples=N_RESAMPLES, require_beats_baseline=False)[1]
    assert allowed.passed and "no champion" in allowed.reason
    entry, decision = decide_challenger(tmp_path, n_resamples=N_RESAMPLES)
    assert not decision.passed and "does not beat the pixel baseline: OOF AUROC 0.61 vs 0.70" in decision.reason
    assert entry.status == "rejected" and promote_if_accepted(tmp_path, entry.version).status == "rejected"
    assert json.loads(Workdir(tmp_path).decision(entry.version).read_text())["require_beats_baseline"] is True
