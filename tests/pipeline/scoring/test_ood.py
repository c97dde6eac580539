"""Out-of-distribution checks on synthetic inputs: each check flags what it should and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.fingerprint import Distribution, Fingerprint, load_fingerprint
from pipeline.scoring.ood import (
    EMBEDDING,
    INTENSITY,
    NOT_CHECKED,
    PATTERN,
    SHAPE,
    SPACING,
    WRONG_MODALITY,
    assess_scans,
    check_scans,
    flag_summary,
)

WIDTH = 64
SCALES = np.linspace(3.0, 0.5, WIDTH)  # anisotropic features, as a network's are


def _features(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, WIDTH)) * SCALES + shift


def _patterns(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """8 x 8 'images': a bright top half, a little noise."""
    base = np.repeat([0.8, 0.2], 32)
    return np.clip(base + np.random.default_rng(seed).normal(0, 0.05, size=(n, 64)) + shift, 0, 1)


def _fitted(name: str, train: np.ndarray, held_out: np.ndarray) -> Distribution:
    fitted = Distribution.fit(name, train)
    return fitted.with_threshold(fitted.distances(held_out))


@pytest.fixture(scope="module")
def fingerprint() -> Fingerprint:
    models = [_fitted(f"m{k}", _features(300, seed=k), _features(150, seed=10 + k)) for k in range(2)]
    return Fingerprint(
        dims=2,
        n_scans=300,
        modalities={"US": 300},
        manufacturers={"Vendor": 300},
        spacing_mm={"min": [0.5, 0.5, 1.0], "max": [1.0, 1.0, 1.0]},
        shape={"min": [28.0, 28.0, 1.0], "max": [64.0, 64.0, 1.0]},
        intensity={"US": {"min": [0, 5, 20, 100, 150], "max": [40, 60, 150, 220, 255]}},
        pattern=_fitted("model input", _patterns(300, seed=1), _patterns(150, seed=2)),
        embedding=models,
    )


TYPICAL = {"modality": "US", "spacing_mm": [0.8, 0.8, 1.0], "shape": [32, 32, 1]}
LEVELS = [10.0, 30.0, 80.0, 160.0, 200.0]


def _check(  # type: ignore[type-arg]
    fingerprint: Fingerprint,
    rows: list[dict],
    levels: list[list[float]],
    features: np.ndarray,
    patterns: np.ndarray | None = None,
) -> list:
    embeddings = {e.name: features for e in fingerprint.embedding}
    patterns = _patterns(len(rows), seed=50) if patterns is None else patterns
    return check_scans(fingerprint, pd.DataFrame(rows), np.asarray(levels), patterns, embeddings)


def test_a_typical_scan_is_not_flagged(fingerprint: Fingerprint) -> None:
    (result,) = _check(fingerprint, [TYPICAL], [LEVELS], _features(1, seed=99))
    assert result.flags == () and not result.flagged and result.reason == "" and result.flag_text == ""
    assert 0 <= result.score <= 1
    assert set(result.distances) == {SPACING, SHAPE, INTENSITY, PATTERN, EMBEDDING}


@pytest.mark.parametrize(
    ("change", "levels", "flag"),
    [
        ({"spacing_mm": [0.3, 0.3, 1.0]}, LEVELS, SPACING),  # finer than 0.5 / 1.25 = 0.4 mm
        ({"spacing_mm": [1.3, 1.3, 1.0]}, LEVELS, SPACING),  # coarser than 1.25 mm
        ({"shape": [512, 512, 1]}, LEVELS, SHAPE),
        ({"shape": [20, 28, 1]}, LEVELS, SHAPE),  # below 28 / 1.25 = 22.4 on one axis
        ({"shape": [32, 32]}, LEVELS, SHAPE),  # another number of axes
        ({}, [245.0, 225.0, 175.0, 95.0, 55.0], INTENSITY),  # the typical levels inverted (255 - v)
        ({}, [0.0, 0.0, 0.0, 0.0, 255.0], INTENSITY),  # a binary mask: mostly background
    ],
)
def test_each_range_check_flags_its_own(
    fingerprint: Fingerprint,
    change: dict,
    levels: list[float],
    flag: str,  # type: ignore[type-arg]
) -> None:
    (result,) = _check(fingerprint, [{**TYPICAL, **change}], [levels], _features(1, seed=99))
    assert result.flags == (flag,)
    assert result.score > 1 and result.reason == f"out of distribution: {flag}"


def test_the_range_margins_allow_a_little(fingerprint: Fingerprint) -> None:
    edge = {**TYPICAL, "spacing_mm": [0.42, 1.2, 1.0], "shape": [23, 78, 1]}  # within 25% of the ranges
    (result,) = _check(fingerprint, [edge], [[-20.0, 5.0, 20.0, 220.0, 270.0]], _features(1, seed=99))
    assert result.flags == ()


def test_another_modality_is_flagged_and_its_intensities_are_not_compared(fingerprint: Fingerprint) -> None:
    ct = {"modality": "CT", "spacing_mm": [0.8, 0.8, 1.0], "shape": [32, 32, 1]}
    (result, unknown) = _check(
        fingerprint, [ct, {**TYPICAL, "modality": None}], [[-1000.0, -900, 0, 400, 1500]] * 2, _features(2, seed=99)
    )
    assert result.flags == (WRONG_MODALITY,) and np.isnan(result.distances[INTENSITY])
    assert result.reason == "out of distribution: wrong_modality" and result.score <= 1  # categorical: not in score
    assert unknown.flags == (WRONG_MODALITY,)


def test_an_inverted_pattern_is_an_intensity_flag(fingerprint: Fingerprint) -> None:
    """Same levels (an inverted image with a symmetric histogram), another pattern: only (b) catches it."""
    (result,) = _check(fingerprint, [TYPICAL], [LEVELS], _features(1, seed=99), 1.0 - _patterns(1, seed=7))
    assert result.flags == (INTENSITY,)
    assert result.distances[INTENSITY] <= 1 < result.distances[PATTERN] == result.score


def test_embedding_distance_flags_features_far_from_training(fingerprint: Fingerprint) -> None:
    far = _features(20, shift=3.0, seed=5)
    results = _check(fingerprint, [TYPICAL] * 20, [LEVELS] * 20, far)
    assert all(r.flags == (EMBEDDING,) for r in results)
    assert all(r.score == pytest.approx(r.distances[EMBEDDING]) for r in results)


def test_in_distribution_flag_rate_is_about_one_percent(fingerprint: Fingerprint) -> None:
    """Thresholds are the 0.99 quantile of held-out distances (the embedding's averaged over the fold models)."""
    results = _check(fingerprint, [TYPICAL] * 2000, [LEVELS] * 2000, _features(2000, seed=123), _patterns(2000, seed=9))
    summary = flag_summary(results)
    assert summary["n"] == 2000 and summary["rate"] <= 0.03
    assert summary["by_flag"][EMBEDDING] <= 0.015 * 2000 and summary["by_flag"][INTENSITY] <= 0.02 * 2000
    assert summary["by_flag"][SPACING] == summary["by_flag"][SHAPE] == summary["by_flag"][WRONG_MODALITY] == 0


def test_several_flags_are_listed_in_order(fingerprint: Fingerprint) -> None:
    ct = {"modality": "CT", "spacing_mm": [0.1, 0.1, 3.0], "shape": [512, 512, 1]}
    (result,) = _check(fingerprint, [ct], [LEVELS], _features(1, shift=5.0, seed=1))
    assert result.flags == (WRONG_MODALITY, SPACING, SHAPE, EMBEDDING)
    assert result.flag_text == "wrong_modality,spacing_out_of_range,shape_out_of_range,embedding_distance"
    assert result.score == max(v for v in result.distances.values() if not np.isnan(v))


def test_every_fold_model_needs_its_features(fingerprint: Fingerprint) -> None:
    with pytest.raises(ValueError, match="m1"):
        check_scans(fingerprint, pd.DataFrame([TYPICAL]), np.asarray([LEVELS]), _patterns(1), {"m0": _features(1)})


def test_without_a_fingerprint_nothing_is_checked() -> None:
    index = pd.DataFrame({"scan_id": ["a", "b"], "cache_path": ["x.npy", "y.npy"]})
    results = assess_scans(None, pd.DataFrame(), Path("/nowhere"), [], index)
    assert results == [NOT_CHECKED, NOT_CHECKED] and np.isnan(results[0].score) and results[0].flag_text == ""


def test_a_saved_fingerprint_checks_alike(fingerprint: Fingerprint, tmp_path: Path) -> None:
    assert load_fingerprint(tmp_path / "f.json", tmp_path / "f.npz") is None
    fingerprint.save(tmp_path / "f.json", tmp_path / "f.npz")
    loaded = load_fingerprint(tmp_path / "f.json", tmp_path / "f.npz")
    assert loaded is not None and loaded.to_json() == fingerprint.to_json()
    rows, levels = [TYPICAL, {**TYPICAL, "modality": "CT"}], [LEVELS, LEVELS]
    features = _features(2, seed=3)
    again, first = _check(loaded, rows, levels, features), _check(fingerprint, rows, levels, features)
    assert [r.flags for r in again] == [r.flags for r in first] == [(), (WRONG_MODALITY,)]
    for a, b in zip(again, first, strict=True):
        np.testing.assert_allclose(list(a.distances.values()), list(b.distances.values()), equal_nan=True)
