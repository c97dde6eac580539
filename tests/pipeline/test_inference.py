"""Prediction over cached inputs: one model, and an ensemble that reads each batch once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.inference import load_model, predict_ensemble, predict_probabilities
from pipeline.preprocess import preprocess_catalog


def test_ensemble_is_the_mean_of_its_models_in_row_order_at_any_batch_size(champion_workdir: Path) -> None:
    registry_version = json.loads((champion_workdir / "registry" / "index.json").read_text())["champion"]
    folder = champion_workdir / "registry" / "versions" / registry_version / "models"
    models = [load_model(path, "cpu") for path in sorted(folder.iterdir())]
    assert len(models) == 3
    catalog = pd.read_parquet(champion_workdir / "catalog.parquet")
    scans = catalog[catalog["dims"] == 2].head(7)
    index = preprocess_catalog(champion_workdir, models[0].preprocess, scans=scans).index  # cached already
    singles = [predict_probabilities(m, champion_workdir, index) for m in models]
    for batch_size in (3, 64):
        ensemble = predict_ensemble(models, champion_workdir, index, batch_size=batch_size)
        np.testing.assert_allclose(ensemble, np.mean(singles, axis=0), rtol=0, atol=1e-6)
    assert singles[0].shape == (len(index), 2) and np.allclose(singles[0].sum(axis=1), 1)
    assert predict_ensemble(models, champion_workdir, index.head(0)).shape == (0, 2)
    odd = load_model(folder / sorted(p.name for p in folder.iterdir())[0], "cpu")
    odd.classes = [1, 0]
    with pytest.raises(UserInputError, match="class order"):
        predict_ensemble([models[0], odd], champion_workdir, index)
