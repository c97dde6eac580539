"""The training-data fingerprint's measurements (raw intensity percentiles, input patterns, penultimate
features) and its distributions."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.evaluate import scan_features as fp
from pipeline.evaluate.fingerprint import MAX_COMPONENTS, QUANTILE, Distribution, load_fingerprint
from pipeline.inference import LoadedModel
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig
from pipeline.train.device import resolve_device


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_raw_percentiles_are_of_stored_values_before_normalisation(tmp_path: Path) -> None:
    data = np.arange(101, dtype=np.int16).reshape(101, 1, 1) - 1024  # HU-like, not in [0, 1]
    levels = fp.raw_percentiles(_nifti(tmp_path / "a.nii", data))
    np.testing.assert_allclose(levels, np.asarray(fp.PERCENTILES) - 1024)
    both = fp.scan_percentiles([tmp_path / "a.nii", _nifti(tmp_path / "b.nii", data[::-1] * 0 + 7)], workers=1)
    assert both.shape == (2, len(fp.PERCENTILES)) and (both[1] == 7).all()


def test_large_volumes_are_subsampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 10.0, size=(40, 40, 40)).astype(np.float32)
    path = _nifti(tmp_path / "big.nii", data)
    monkeypatch.setattr(fp, "MAX_VOXELS", 8000)  # a step of 2 per axis: 20^3 voxels read
    levels = fp.raw_percentiles(path)
    np.testing.assert_allclose(levels, np.percentile(data[::2, ::2, ::2], fp.PERCENTILES), rtol=1e-6)
    np.testing.assert_allclose(levels, np.percentile(data, fp.PERCENTILES), rtol=0.05)


def test_penultimate_features_are_the_input_of_fc(tmp_path: Path) -> None:
    pre = PreprocessConfig(dims=2, input_size=(16, 16))
    torch.manual_seed(0)
    network = build_classifier(2, pre).network.eval()
    # with test-time flips the model sees three views; the features are of the unflipped one
    loaded = LoadedModel(network, {"model_id": "m", "hyperparameters": {"tta_flips": True}}, [0, 1], pre, resolve_device("cpu"))
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        np.save(tmp_path / f"{k}.npy", rng.random((1, 16, 16), dtype=np.float32))
        paths.append(f"{k}.npy")
    (features,) = fp.penultimate_features([loaded], tmp_path, pd.DataFrame({"cache_path": paths}), batch_size=2)
    headless = copy.deepcopy(network)
    headless.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = headless(torch.from_numpy(np.stack([np.load(tmp_path / p) for p in paths]))).numpy()
    assert features.shape == (3, network.fc.in_features)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert not network.fc._forward_pre_hooks  # the hook is removed afterwards


def test_input_patterns_are_area_downsampled_model_inputs(tmp_path: Path) -> None:
    image = np.zeros((1, 32, 32), np.float32)
    image[:, :16] = 1.0  # the top half bright
    np.save(tmp_path / "a.npy", image)
    np.save(tmp_path / "b.npy", 1.0 - image)  # inverted: the same histogram, another pattern
    np.save(tmp_path / "v.npy", np.ones((1, 16, 16, 16), np.float32))
    patterns = fp.input_patterns(tmp_path, pd.DataFrame({"cache_path": ["a.npy", "b.npy"]}))
    edge = fp.PATTERN_EDGE
    assert patterns.shape == (2, edge * edge)
    np.testing.assert_allclose(patterns[0].reshape(edge, edge)[: edge // 2], 1.0)
    np.testing.assert_allclose(patterns[0] + patterns[1], 1.0)
    volume = fp.input_patterns(tmp_path, pd.DataFrame({"cache_path": ["v.npy"]}))
    assert volume.shape == (1, edge**3)


def test_a_distribution_thresholds_at_the_held_out_quantile() -> None:
    rng = np.random.default_rng(1)
    train, held_out = rng.normal(size=(200, 50)), rng.normal(size=(100, 50))
    fitted = Distribution.fit("m", train)
    stats = fitted.with_threshold(fitted.distances(held_out))
    assert stats.components.shape == (MAX_COMPONENTS, 50) and (stats.n_train, stats.n_reference) == (200, 100)
    assert stats.threshold == pytest.approx(np.quantile(stats.distances(held_out), QUANTILE))
    assert Distribution.fit("m", train[:10]).components.shape[0] == 9  # fewer scans than components: n - 1
    assert stats.distances(held_out + 10.0).min() > stats.threshold
    assert np.isinf(fitted.threshold)  # no threshold before one is measured


def test_without_the_fold_models_there_is_no_fingerprint(tmp_path: Path) -> None:
    """Pooled predictions without their models (synthetic evaluations): a note, and no stale fingerprint left."""
    from pipeline.evaluate.fingerprint import build_fingerprint
    from pipeline.layout import Workdir

    wd = Workdir(tmp_path)
    wd.evaluation.mkdir()
    wd.fingerprint.write_text("{}")  # from an earlier evaluation: must not be registered with other models
    block = build_fingerprint(tmp_path, None, [{"fold": 0, "model_id": "m0"}])  # type: ignore[arg-type]
    assert block == {"note": "no fingerprint: fold model m0 has no weights in this work folder"}
    assert not wd.fingerprint.exists()


def test_a_fingerprint_of_another_format_reads_as_none_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    json_path, arrays_path = tmp_path / "fingerprint.json", tmp_path / "fingerprint.npz"
    json_path.write_text('{"dims": 2, "intensity": {"pattern": null}, "embedding": {"models": [{"threshold": 1}]}}')
    np.savez(arrays_path, model0_mean=np.zeros(3))
    assert load_fingerprint(json_path, arrays_path) is None
    assert "cannot be read (KeyError)" in caplog.text
    arrays_path.write_bytes(b"not a zip")
    assert load_fingerprint(json_path, arrays_path) is None
