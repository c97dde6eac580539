"""The training loop: AdamW with discriminative learning rates, warm-up then cosine decay, optional
head-only epochs, class-weighted loss, gradient accumulation, early stopping on validation AUROC,
AMP on CUDA, and an atomic checkpoint every epoch that ``resume`` continues exactly.

Artefacts go to ``W/models/<model_id>/``: ``weights.pt`` (best state dict), ``model_card.json``,
``checkpoint.pt`` and ``history.json``. The model id hashes the data, preprocessing and training
settings, so the same command finds its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from pipeline.errors import UserInputError
from pipeline.locking import writes_workdir
from pipeline.models import build_classifier, min_batch_size
from pipeline.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    build_augmentation,
    preprocess_catalog,
)
from pipeline.storage import write_bytes_if_changed
from pipeline.train.card import git_sha, library_versions
from pipeline.train.checkpoint import (
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from pipeline.train.config import TrainConfig
from pipeline.train.curves import plot_learning_curves
from pipeline.train.data import CachedScans, manifest_hash, seed_worker, split_train_val
from pipeline.train.device import DeviceSettings, resolve_device

module_log = logging.getLogger(__name__)


class WarmupCosine:
    """LR multiplier per optimiser step: linear warm-up from 1/warmup, then cosine decay to 0."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps, self.total_steps = max(0, warmup_steps), max(1, total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainResult:
    model_dir: Path
    card: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    completed: bool = True


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, dev: DeviceSettings, dims: int) -> tuple[float, float]:
    model.eval()
    losses, probs, targets = [], [], []
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(dev.device, non_blocking=dev.non_blocking, memory_format=dev.memory_format(dims))
            labels = labels.to(dev.device, non_blocking=dev.non_blocking)
            with dev.autocast():
                logits = model(images)
            losses.append(float(loss_fn(logits.float(), labels)) * len(labels))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            targets.append(labels.cpu())
    p, y = torch.cat(probs).numpy(), torch.cat(targets).numpy()
    if len(np.unique(y)) < 2:
        auroc = float("nan")
    elif p.shape[1] == 2:
        auroc = float(roc_auc_score(y, p[:, 1]))
    else:
        auroc = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1]))))
    return sum(losses) / len(y), auroc


@writes_workdir("train")
def train(
    workdir: Path,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig = AugmentConfig(),
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = False,
    log: logging.Logger | Any = module_log,
    scans: pd.DataFrame | None = None,
) -> TrainResult:
    """Train on the catalogue's labelled scans (split ``train``, early-stopping on ``val``).

    ``scans`` (catalogue rows) restricts training to a subset, such as the training folds of a
    cross-validation: their ``split`` column is then ignored and early stopping uses a seeded
    patient-grouped ``val_fraction`` of the subset, so nothing outside ``scans`` is ever seen.
    """
    _seed_everything(cfg.seed)
    dev = resolve_device(cfg.device, cfg.deterministic)
    if scans is not None:
        scans = scans.assign(split=None)
    prepared = preprocess_catalog(workdir, pre, scans=scans)
    split = split_train_val(prepared.index, cfg.val_fraction, cfg.seed)
    classes = sorted(int(c) for c in split.train["label"].unique())
    if len(classes) < 2:
        raise UserInputError("the training split holds a single class: nothing to learn")
    unseen = ~split.val["label"].astype(int).isin(classes)
    if unseen.any():
        log.warning("%d validation scans have a class absent from training; they are left out", int(unseen.sum()))
        split = type(split)(split.train, split.val[~unseen], split.source)
    data_hash = manifest_hash([split.train, split.val])
    model_id = f"resnet50-{pre.dims}d-" + _short_hash(data_hash, prepared.config_hash, cfg.identity_hash(), asdict(aug))
    model_dir = workdir / "models" / model_id
    model_dir.mkdir(parents=True, exist_ok=True)

    model = build_classifier(len(classes), pre, cfg.weights, cfg.inflation, cfg.depth_kernel)
    needed = min_batch_size(model, pre.input_size, pre.in_channels)
    if cfg.batch_size < needed:
        raise UserInputError(
            f"batch size {cfg.batch_size} cannot train a {pre.dims}D model at {pre.input_size}: the last stage "
            f"is 1 voxel, so BatchNorm needs a batch of at least {needed} (or use a larger input)"
        )
    model = model.to(dev.device, memory_format=dev.memory_format(pre.dims))
    train_set = CachedScans(workdir, split.train, classes, build_augmentation(aug, pre.dims), cfg.seed)
    val_set = CachedScans(workdir, split.val, classes)
    generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=RandomSampler(train_set, generator=generator),
                        num_workers=cfg.num_workers, pin_memory=dev.pin_memory, drop_last=needed > 1,
                        worker_init_fn=seed_worker)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=dev.pin_memory)
    if len(loader) == 0:
        raise UserInputError(f"{len(train_set)} training scans are fewer than one batch of {cfg.batch_size}")

    counts = torch.bincount(train_set.targets, minlength=len(classes)).float()
    weights = counts.sum() / (len(classes) * counts) if cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev.device) if weights is not None else None)
    head = [p for n, p in model.named_parameters() if n.startswith("fc.")]
    backbone = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    pretrained = model.weights_source.kind != "random-init"  # type: ignore[attr-defined]
    backbone_factor = cfg.backbone_lr_factor if pretrained else 1.0  # nothing to preserve in random weights
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": cfg.lr * backbone_factor}, {"params": head, "lr": cfg.lr}],
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_auroc": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    checkpoint_path = model_dir / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        restore_rng(saved["rng"])
        generator.set_state(saved["sampler"]["generator"])  # re-seeded per epoch; kept for completeness
        state = saved["loop"]
        log.info("resuming %s after epoch %d", model_id, state["epoch"])
    elif resume:
        log.warning("no checkpoint for %s: starting from scratch", model_id)

    log.info("training %s on %s: %d train / %d val scans (%s), classes %s, weights: %s, backbone lr x%g", model_id,
             dev.description, len(train_set), len(val_set), split.source, classes,
             model.weights_source.description, backbone_factor)  # type: ignore[attr-defined]
    epochs_this_run = 0
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        if stop_after is not None and epochs_this_run >= stop_after:
            break
        frozen = epoch < cfg.head_only_epochs
        for parameter in backbone:
            parameter.requires_grad_(not frozen)
        train_set.set_epoch(epoch)
        generator.manual_seed(cfg.seed * 7919 + epoch)
        model.train()
        started, seen, total_loss = time.perf_counter(), 0, 0.0
        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       disable=None if progress else True)  # None: only on an interactive terminal
        for index, (images, labels) in enumerate(batches):
            images = images.to(dev.device, non_blocking=dev.non_blocking, memory_format=dev.memory_format(pre.dims))
            labels = labels.to(dev.device, non_blocking=dev.non_blocking)
            with dev.autocast():
                loss = loss_fn(model(images).float(), labels)
            scaler.scale(loss / cfg.grad_accumulation).backward()
            if (index + 1) % cfg.grad_accumulation == 0 or index + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                state["step"] += 1
            total_loss += float(loss.detach()) * len(labels)
            seen += len(labels)
        elapsed = time.perf_counter() - started
        val_loss, val_auroc = _evaluate(model, val_loader, loss_fn, dev, pre.dims)
        record = {"epoch": epoch + 1, "train_loss": total_loss / seen, "val_loss": val_loss, "val_auroc": val_auroc,
                  "lr": optimizer.param_groups[1]["lr"], "images_per_s": seen / elapsed, "head_only": frozen}
        state["history"].append(record)
        score = val_auroc if not math.isnan(val_auroc) else -val_loss
        if score > state["best_auroc"]:
            state.update(best_auroc=score, best_epoch=epoch + 1, bad_epochs=0)
            _save_weights(model_dir / "weights.pt", model)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        epochs_this_run += 1
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "loop": state,
            "sampler": {"generator": generator.get_state(), "seed": cfg.seed, "epoch": epoch},
        })
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val AUROC %.4f, %.1f images/s%s", epoch + 1, cfg.epochs,
                 record["train_loss"], val_loss, val_auroc, record["images_per_s"], " (head only)" if frozen else "")

    completed = state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience
    card = _card(model_id, model, cfg, pre, aug, prepared.config_hash, classes, split, data_hash, state, dev, completed)
    card["hyperparameters"]["backbone_lr_factor_applied"] = backbone_factor
    write_bytes_if_changed(model_dir / "model_card.json", json.dumps(card, indent=2).encode())
    write_bytes_if_changed(model_dir / "history.json", json.dumps(state["history"], indent=2).encode())
    if state["history"]:
        plot_learning_curves(state["history"], model_dir / "learning_curves.png")
    return TrainResult(model_dir, card, state["history"], completed)


def _save_weights(path: Path, model: nn.Module) -> None:
    save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _card(model_id: str, model: nn.Module, cfg: TrainConfig, pre: PreprocessConfig, aug: AugmentConfig,
          pre_hash: str, classes: list[int], split: Any, data_hash: str, state: dict[str, Any],
          dev: DeviceSettings, completed: bool) -> dict[str, Any]:
    source = model.weights_source  # type: ignore[attr-defined]
    best = state["best_auroc"]
    return {
        "model_id": model_id,
        "architecture": "ResNet-50 (MONAI; torchvision-equivalent 7x7 stride-2 stem)",
        "dims": pre.dims,
        "inflation": getattr(model, "inflation", None),
        "input_size": list(pre.input_size),
        "in_channels": pre.in_channels,
        "preprocessing": {"config": asdict(pre), "config_hash": pre_hash},
        "augmentation": asdict(aug),
        "weights_source": {"kind": source.kind, "sha256": source.sha256, "description": source.description},
        "class_names": [str(c) for c in classes],
        "training_data": {"manifest_hash": data_hash, "n_train": len(split.train), "n_val": len(split.val),
                          "n_train_patients": int(split.train["patient_id"].nunique()), "split": split.source},
        "hyperparameters": asdict(cfg),
        "validation": {"best_auroc": None if best == -math.inf else best, "best_epoch": state["best_epoch"],
                       "epochs_run": state["epoch"],
                       "early_stopped": state["bad_epochs"] >= cfg.patience and state["epoch"] < cfg.epochs},
        "training_complete": completed,
        "device": dev.description,
        "seed": cfg.seed,
        "library_versions": library_versions(),
        "git_sha": git_sha(),
    }
