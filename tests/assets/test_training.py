"""Dagster assets of the preprocess and training groups, materialised in-process on a tiny work folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from assets.definitions import defs
from assets.launcher import TrainingLauncher
from assets.resources import ScanLensProject
from assets.training import ModelInputConfig, TrainedModelConfig, preprocessed_scans, trained_model

IN_PROCESS = TrainingLauncher(mode="in_process")  # the child-process default is tested in test_launcher.py


def _run(workdir: Path, kind: str, **train_overrides: object) -> dg.ExecuteInProcessResult:
    config = TrainedModelConfig(**{"epochs": 1, "batch_size": 4, "weights": "", **train_overrides})
    return dg.materialize(
        [preprocessed_scans, trained_model],
        partition_key=kind,
        resources={"project": ScanLensProject(workdir=str(workdir)), "launcher": IN_PROCESS},
        run_config=dg.RunConfig(ops={"preprocessed_scans": ModelInputConfig(), "trained_model": config}),
    )


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_groups_partitions_and_gpu_pool() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("preprocessed_scans")).group_name == "preprocess"
    node = graph.get(dg.AssetKey("trained_model"))
    assert node.group_name == "training" and node.partitions_def.get_partition_keys() == ["2d", "3d"]
    assert trained_model.op.pool == "gpu"


def test_2d_model_materialises_with_curves_and_card(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir)
    result = _run(workdir, "2d")
    assert result.success
    prep = _metadata(result, "preprocessed_scans")
    assert prep["scans"] == 36 and prep["by_split"] == {"test": 12, "train": 12, "val": 12}
    meta = _metadata(result, "trained_model")
    assert meta["epochs_run"] == 1 and meta["model_card"]["dims"] == 2
    assert "| 1 |" in meta["learning_curves"] and "data:image/png;base64," in meta["learning_curves"]
    assert "random" in meta["weights_source"]
    again = _run(workdir, "2d")  # same inputs: the finished model is reused, nothing is recomputed
    assert _metadata(again, "preprocessed_scans")["computed"] == 0
    assert _metadata(again, "trained_model")["model_id"] == meta["model_id"]


def test_3d_partition_trains_an_inflated_model(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir)
    meta = _metadata(_run(workdir, "3d", batch_size=2), "trained_model")
    assert meta["model_card"]["dims"] == 3 and meta["model_card"]["inflation"]["mode"] == "average"
