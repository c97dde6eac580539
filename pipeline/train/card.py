"""The model card: how a model was made, in one JSON file beside its weights."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.models import Classifier
    from pipeline.preprocess import AugmentConfig, PreprocessConfig
    from pipeline.settings.train import TrainConfig
    from pipeline.train.data import TrainingData
    from pipeline.train.progress import Progress

ARCHITECTURE = "ResNet-50 (MONAI; torchvision-equivalent 7x7 stride-2 stem)"
LIBRARIES = ("torch", "monai", "numpy", "scikit-learn", "pydicom", "nibabel", "dagster", "scanlens")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_sha() -> str:
    """The commit of the ScanLens checkout (suffixed ``-dirty`` with local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card records about one training run (see :func:`model_card`)."""

    data: TrainingData
    classifier: Classifier
    cfg: TrainConfig
    pre: PreprocessConfig
    aug: AugmentConfig
    progress: Progress
    device: str  # DeviceSettings.description
    completed: bool
    backbone_lr_factor: float  # the factor applied: cfg.backbone_lr_factor, or 1.0 from random initialisation
    distributed: dict[str, Any]  # world_size, backend, devices, per_rank_batch, global_batch, sync_bn


def model_card(facts: CardFacts) -> dict[str, Any]:
    """The model card as a JSON-ready dict.

    ``validation`` names the model-selection metric: ``selection_metric`` is ``val_auroc`` or
    ``neg_val_loss`` (when the validation set holds one class), ``best_value`` its best value, and
    ``best_auroc`` the best epoch's validation AUROC, or None where AUROC is undefined.
    ``distributed`` records the processes that trained it: ``world_size``, ``backend`` (``nccl``,
    ``gloo``, or None for one process), ``devices`` (per rank), ``per_rank_batch`` and ``global_batch``
    (images per optimiser micro-step, over all processes) and ``sync_bn``.
    """
    data, classifier, cfg, pre, progress = facts.data, facts.classifier, facts.cfg, facts.pre, facts.progress
    source, split = classifier.weights_source, data.split
    return {
        "model_id": data.model_id,
        "architecture": ARCHITECTURE,
        "dims": pre.dims,
        "inflation": asdict(classifier.inflation) if classifier.inflation is not None else None,
        "input_size": list(pre.input_size),
        "in_channels": pre.in_channels,
        "preprocessing": {"config": asdict(pre), "config_hash": data.preprocess_hash},
        "augmentation": asdict(facts.aug),
        "weights_source": {"kind": source.kind, "sha256": source.sha256, "description": source.description},
        "class_names": [str(c) for c in data.classes],
        "training_data": {
            "manifest_hash": data.manifest_hash,
            "n_train": len(split.train),
            "n_val": len(split.val),
            "n_train_patients": int(split.train["patient_id"].nunique()),
            "split": split.source,
        },
        "hyperparameters": {**asdict(cfg), "backbone_lr_factor_applied": facts.backbone_lr_factor},
        "validation": {
            "selection_metric": progress.selection_metric,
            "best_value": progress.best_value,
            "best_auroc": progress.best_auroc,
            "best_epoch": progress.best_epoch,
            "epochs_run": progress.epoch,
            "early_stopped": progress.early_stopped(cfg.epochs, cfg.patience),
        },
        "training_complete": facts.completed,
        "device": facts.device,
        "distributed": facts.distributed,
        "seed": cfg.seed,
        "library_versions": library_versions(),
        "git_sha": git_sha(),
    }
