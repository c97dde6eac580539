"""The registry: versions appear whole, exactly one champion, an append-only history with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import UserInputError
from pipeline.layout import Workdir
from pipeline.registry import Registry


def _evaluated(workdir: Path, tag: str) -> None:
    (workdir / "evaluation").mkdir(parents=True, exist_ok=True)
    model_id = f"resnet50-2d-{tag}"
    model_dir = workdir / "models" / model_id
    model_dir.mkdir(parents=True)
    (model_dir / "weights.pt").write_bytes(b"weights " + tag.encode())
    (model_dir / "model_card.json").write_text(json.dumps({
        "model_id": model_id, "dims": 2, "training_data": {"manifest_hash": "m" + tag}, "preprocessing": {"config": {}}}))
    metrics = {"models": [{"fold": 0, "model_id": model_id}], "settings": {"folds_hash": "f"}, "classes": ["0", "1"],
               "operating_point": {"threshold": 0.4}, "oof": {"auroc": 0.8, "auroc_ci": [0.7, 0.9]}, "test": None}
    (workdir / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    for name in ("oof_predictions.parquet", "folds.parquet"):
        pd.DataFrame({"scan_id": ["a"]}).to_parquet(workdir / "evaluation" / name)


def test_register_promote_reject_and_history(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    _evaluated(tmp_path, "one")
    first = registry.register()
    assert registry.register().version == first.version  # the same evaluation registers once
    assert Workdir(tmp_path).version(first.version).model("resnet50-2d-one").weights.exists()
    assert first.status == "registered" and registry.champion() is None
    with pytest.raises(UserInputError, match="reason"):
        registry.promote(first.version, " ")
    registry.promote(first.version, "first model passing the sanity checks")
    assert registry.champion() == first.version
    _evaluated(tmp_path, "two")
    second = registry.register()
    assert second.version != first.version
    registry.reject(second.version, "not shown non-inferior")
    assert registry.entry(second.version).status == "rejected"
    assert registry.entry(second.version).reason == "not shown non-inferior"
    registry.promote(second.version, "manual override after review")
    statuses = {e.version: e.status for e in registry.versions()}
    assert statuses == {first.version: "retired", second.version: "champion"}
    assert sum(s == "champion" for s in statuses.values()) == 1
    actions = [(h["version"], h["action"]) for h in registry.history()]
    assert actions == [(first.version, "registered"), (first.version, "promoted"), (second.version, "registered"),
                       (second.version, "rejected"), (first.version, "retired"), (second.version, "promoted")]
    assert all(h["reason"] and h["time"] for h in registry.history())
    assert not list((tmp_path / "registry" / "versions").glob(".*partial"))
