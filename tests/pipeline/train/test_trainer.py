"""The trainer: schedule, early stopping, head-only epochs, the BatchNorm guard, model card, and
an exact resume in a new process."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.preprocess import AugmentConfig, PreprocessConfig
from pipeline.train import TrainConfig, train
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.loop import WarmupCosine
from pipeline.train.progress import Progress

PRE_2D = PreprocessConfig(dims=2, input_size=(32, 32))


def _copy(tiny_workdir: Path, tmp_path: Path, name: str = "w") -> Path:
    target = tmp_path / name
    shutil.copytree(tiny_workdir, target, ignore=shutil.ignore_patterns("models"))
    return target


def test_warmup_then_cosine() -> None:
    schedule = WarmupCosine(warmup_steps=4, total_steps=20)
    values = [schedule(s) for s in range(21)]
    assert values[0] == 0.25 and values[3] == 1.0 and values[4] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(values[4:])) and values[20] == 0.0


def test_training_writes_weights_card_and_history(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path)
    result = train(workdir, TrainConfig(epochs=2, batch_size=8, deterministic=True, grad_accumulation=2), PRE_2D)
    card = json.loads((result.model_dir / "model_card.json").read_text())
    assert (result.model_dir / "weights.pt").exists() and len(result.history) == 2
    assert card["dims"] == 2 and card["class_names"] == ["0", "1"] and card["training_data"]["n_train"] == 12
    assert card["weights_source"]["kind"] == "random-init" and "random" in card["weights_source"]["description"]
    assert card["training_data"]["split"] == "catalogue" and len(card["training_data"]["manifest_hash"]) == 64
    assert card["preprocessing"]["config"]["input_size"] == [32, 32] and card["git_sha"]
    assert {"torch", "monai"} <= set(card["library_versions"])
    validation = card["validation"]
    assert validation["selection_metric"] == "val_auroc" and 0.0 <= validation["best_auroc"] <= 1.0
    assert validation["best_value"] == validation["best_auroc"]
    assert validation["best_auroc"] == result.history[validation["best_epoch"] - 1]["val_auroc"]
    checkpoint = load_checkpoint(result.model_dir / "checkpoint.pt")
    assert checkpoint["loop"]["step"] == 2 * 1  # 12 images, batch 8 -> 2 batches, 2 per optimiser step
    state = torch.load(result.model_dir / "weights.pt", weights_only=True)
    assert state["fc.weight"].shape == (2, 2048)


def test_resume_in_a_new_process_gives_identical_weights(tiny_workdir: Path, tmp_path: Path) -> None:
    straight, split = _copy(tiny_workdir, tmp_path, "straight"), _copy(tiny_workdir, tmp_path, "split")
    # paused after the head-only epoch and one full epoch (Adam moments, mid-schedule); resumed for the last
    config = TrainConfig(epochs=3, batch_size=4, deterministic=True, patience=10, head_only_epochs=1)
    full = train(straight, config, PRE_2D)
    paused = train(split, config, PRE_2D, stop_after=2)
    assert not paused.completed and len(paused.history) == 2
    command = [sys.executable, "-m", "pipeline", "train", "--workdir", str(split), "--dims", "2d", "--epochs", "3",
               "--batch-size", "4", "--input-size", "32", "--deterministic", "--patience", "10",
               "--head-only-epochs", "1", "--resume"]
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert paused.model_dir.name == full.model_dir.name
    a = load_checkpoint(full.model_dir / "checkpoint.pt")
    b = load_checkpoint(split / "models" / full.model_dir.name / "checkpoint.pt")
    assert a["loop"]["epoch"] == b["loop"]["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    exact = ("train_loss", "val_loss", "val_auroc", "lr")  # images_per_s is a timing
    assert [[h[k] for k in exact] for h in a["loop"]["history"]] == [[h[k] for k in exact] for h in b["loop"]["history"]]


def test_head_only_epochs_leave_the_backbone_untouched(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path)
    torch.manual_seed(0)
    result = train(workdir, TrainConfig(epochs=1, batch_size=8, head_only_epochs=1, deterministic=True),
                   PRE_2D, AugmentConfig(enabled=False))
    from pipeline.models import build_resnet50

    torch.manual_seed(0)
    initial = build_resnet50(2).network.state_dict()
    trained = load_checkpoint(result.model_dir / "checkpoint.pt")["model"]
    assert torch.equal(trained["layer2.0.conv1.weight"], initial["layer2.0.conv1.weight"])
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])


def test_early_stopping_on_a_flat_validation_auroc(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path)
    result = train(workdir, TrainConfig(epochs=6, batch_size=8, lr=1e-12, patience=1, deterministic=True),
                   PRE_2D, AugmentConfig(enabled=False))
    assert len(result.history) == 2 and result.card["validation"]["early_stopped"]


def test_batchnorm_guard_rejects_batch_size_one_at_32_cubed(tiny_workdir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="at least 2"):
        train(_copy(tiny_workdir, tmp_path), TrainConfig(epochs=1, batch_size=1), PreprocessConfig(dims=3, input_size=(32, 32, 32)))


def test_3d_model_trains_on_3d_scans(tiny_workdir: Path, tmp_path: Path) -> None:
    result = train(_copy(tiny_workdir, tmp_path), TrainConfig(epochs=1, batch_size=2),
                   PreprocessConfig(dims=3, input_size=(32, 32, 32)))
    card = result.card
    assert card["dims"] == 3 and card["inflation"]["mode"] == "average" and card["training_data"]["n_train"] == 4


def test_without_splits_validation_is_patient_grouped(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path)
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    catalog["split"] = None
    catalog.to_parquet(workdir / "catalog.parquet")
    result = train(workdir, TrainConfig(epochs=1, batch_size=8, val_fraction=0.25), PRE_2D)
    assert result.card["training_data"]["split"] == "patient-grouped random split"


def test_a_one_class_validation_set_selects_on_loss_and_says_so(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = _copy(tiny_workdir, tmp_path)
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    val = (catalog["split"] == "val") & (catalog["dims"] == 2)
    catalog[~val | (catalog["label"] == catalog.loc[val, "label"].iloc[0])].to_parquet(workdir / "catalog.parquet")
    result = train(workdir, TrainConfig(epochs=2, batch_size=8, deterministic=True), PRE_2D, AugmentConfig(enabled=False))
    validation = result.card["validation"]
    assert all(math.isnan(h["val_auroc"]) for h in result.history)
    best = result.history[validation["best_epoch"] - 1]
    assert validation["selection_metric"] == "neg_val_loss" and validation["best_auroc"] is None
    assert validation["best_value"] == -best["val_loss"] == -min(h["val_loss"] for h in result.history)


def test_progress_names_its_metric_and_reads_old_checkpoints() -> None:
    old = {"epoch": 2, "step": 4, "best_auroc": -0.5, "best_epoch": 2, "bad_epochs": 0,
           "history": [{"epoch": 1, "val_loss": 0.7, "val_auroc": math.nan}, {"epoch": 2, "val_loss": 0.5, "val_auroc": math.nan}]}
    state = Progress.from_dict(old)
    assert (state.best_score, state.selection_metric, state.best_auroc) == (-0.5, "neg_val_loss", None)
    assert state.as_dict()["best_score"] == -0.5 and "best_auroc" not in state.as_dict()
    fresh = Progress()
    assert (fresh.selection_metric, fresh.best_value, fresh.best_auroc) == (None, None, None)
    assert fresh.observe({"epoch": 1, "val_loss": 0.7, "val_auroc": 0.6})
    assert not fresh.observe({"epoch": 2, "val_loss": 0.5, "val_auroc": 0.55})
    assert (fresh.epoch, fresh.best_epoch, fresh.bad_epochs, fresh.selection_metric, fresh.best_auroc) == (
        2, 1, 1, "val_auroc", 0.6)
    assert fresh.finished(epochs=5, patience=1) and fresh.early_stopped(epochs=5, patience=1)
