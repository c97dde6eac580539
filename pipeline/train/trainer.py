"""The training run: AdamW with discriminative learning rates, warm-up then cosine decay, optional
head-only epochs, class-weighted loss, gradient accumulation, early stopping on validation AUROC
(on validation loss where AUROC is undefined), AMP on CUDA, and an atomic checkpoint every epoch
that ``resume`` continues exactly.

A run is four steps: :func:`_training_data` (split and model id), :func:`_setup` (network, loaders,
optimiser), :func:`_resume` (from ``checkpoint.pt``), then :func:`_epoch` until done, and
:func:`_finalise` (card, history, curves). The epoch itself is :mod:`pipeline.train.loop`.

Artefacts go to ``W/models/<model_id>/`` (:class:`pipeline.layout.ModelFiles`): ``weights.pt``
(best state dict), ``model_card.json``, ``checkpoint.pt`` and ``history.json``. The model id hashes
the data, preprocessing and training settings, so the same command finds its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from pipeline.errors import UserInputError
from pipeline.layout import ModelFiles, Workdir
from pipeline.locking import writes_workdir
from pipeline.models import Classifier, build_classifier, min_batch_size
from pipeline.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    build_augmentation,
    preprocess_catalog,
)
from pipeline.settings.kinds import kind_of
from pipeline.settings.train import TrainConfig
from pipeline.storage import write_bytes_if_changed
from pipeline.train.card import CardFacts, model_card
from pipeline.train.checkpoint import (
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from pipeline.train.curves import plot_learning_curves
from pipeline.train.data import (
    CachedScans,
    TrainingData,
    manifest_hash,
    seed_worker,
    split_train_val,
)
from pipeline.train.device import DeviceSettings, resolve_device
from pipeline.train.loop import Optimisation, build_optimisation, train_epoch, validate
from pipeline.train.progress import Progress

module_log = logging.getLogger(__name__)
#: Default augmentation (a module-level value, not a call in the signature).
DEFAULT_AUGMENT = AugmentConfig()


@dataclass
class TrainResult:
    model_dir: Path
    card: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    completed: bool = True


@dataclass(frozen=True)
class Setup:
    """What a run builds before its first epoch: plain state for the step functions, no behaviour."""

    data: TrainingData
    files: ModelFiles
    classifier: Classifier
    train_set: CachedScans
    loader: DataLoader
    val_loader: DataLoader
    generator: torch.Generator  # the training sampler's, re-seeded every epoch
    opt: Optimisation
    dev: DeviceSettings

    @property
    def network(self) -> nn.Module:
        return self.classifier.network


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@writes_workdir("train")
def train(
    workdir: Path,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig = DEFAULT_AUGMENT,
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
    ``stop_after`` pauses after that many epochs of this call (``resume`` continues); ``progress``
    shows a progress bar on an interactive terminal.
    """
    _seed_everything(cfg.seed)
    dev = resolve_device(cfg.device, cfg.deterministic)
    data = _training_data(workdir, cfg, pre, aug, scans, log)
    setup = _setup(workdir, data, cfg, pre, aug, dev)
    state = _resume(setup, log) if resume else Progress()
    log.info(
        "training %s on %s: %d train / %d val scans (%s), classes %s, weights: %s, backbone lr x%g",
        data.model_id,
        dev.description,
        len(data.split.train),
        len(data.split.val),
        data.split.source,
        data.classes,
        setup.classifier.weights_source.description,
        setup.opt.backbone_factor,
    )
    epochs_this_run = 0
    while not state.finished(cfg.epochs, cfg.patience):
        if stop_after is not None and epochs_this_run >= stop_after:
            break
        _epoch(setup, state, cfg, pre, progress, log)
        epochs_this_run += 1
    return _finalise(setup, state, cfg, pre, aug)


def _training_data(
    workdir: Path,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig,
    scans: pd.DataFrame | None,
    log: logging.Logger | Any,
) -> TrainingData:
    """Preprocess, split train/validation, and name the model after what it learns from."""
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
        split = replace(split, val=split.val[~unseen])
    data_hash = manifest_hash([split.train, split.val])
    model_id = f"resnet50-{kind_of(pre.dims)}-" + _short_hash(
        data_hash, prepared.config_hash, cfg.identity_hash(), asdict(aug)
    )
    return TrainingData(model_id, split, classes, data_hash, prepared.config_hash)


def _setup(
    workdir: Path, data: TrainingData, cfg: TrainConfig, pre: PreprocessConfig, aug: AugmentConfig, dev: DeviceSettings
) -> Setup:
    """The model folder, the network on its device, the data loaders and the optimiser."""
    files = Workdir(workdir).model(data.model_id)
    files.root.mkdir(parents=True, exist_ok=True)
    classifier = build_classifier(len(data.classes), pre, cfg.weights, cfg.inflation, cfg.depth_kernel)
    needed = min_batch_size(classifier.network, pre.input_size, pre.in_channels)
    if cfg.batch_size < needed:
        raise UserInputError(
            f"batch size {cfg.batch_size} cannot train a {pre.dims}D model at {pre.input_size}: the last stage "
            f"is 1 voxel, so BatchNorm needs a batch of at least {needed} (or use a larger input)"
        )
    # torch's Module.to overloads omit memory_format, which it accepts at runtime
    network = classifier.network.to(dev.device, memory_format=dev.memory_format(pre.dims))  # type: ignore[call-overload]
    classifier = replace(classifier, network=network)
    train_set = CachedScans(workdir, data.split.train, data.classes, build_augmentation(aug, pre.dims), cfg.seed)
    val_set = CachedScans(workdir, data.split.val, data.classes)
    generator = torch.Generator()
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=RandomSampler(train_set, generator=generator),
        num_workers=cfg.num_workers,
        pin_memory=dev.pin_memory,
        drop_last=needed > 1,
        worker_init_fn=seed_worker,
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=dev.pin_memory)
    if len(loader) == 0:
        raise UserInputError(f"{len(train_set)} training scans are fewer than one batch of {cfg.batch_size}")
    opt = build_optimisation(
        classifier.network, train_set.targets, len(data.classes), classifier.pretrained, cfg, dev, len(loader)
    )
    return Setup(data, files, classifier, train_set, loader, val_loader, generator, opt, dev)


def _resume(setup: Setup, log: logging.Logger | Any) -> Progress:
    """Restore network, optimiser, scheduler, scaler and every RNG from ``checkpoint.pt``; fresh
    progress when there is none."""
    if not setup.files.checkpoint.exists():
        log.warning("no checkpoint for %s: starting from scratch", setup.data.model_id)
        return Progress()
    saved = load_checkpoint(setup.files.checkpoint)
    setup.network.load_state_dict(saved["model"])
    setup.opt.optimizer.load_state_dict(saved["optimizer"])
    setup.opt.scheduler.load_state_dict(saved["scheduler"])
    setup.opt.scaler.load_state_dict(saved["scaler"])
    restore_rng(saved["rng"])
    setup.generator.set_state(saved["sampler"]["generator"])  # re-seeded per epoch; kept for completeness
    state = Progress.from_dict(saved["loop"])
    log.info("resuming %s after epoch %d", setup.data.model_id, state.epoch)
    return state


def _epoch(
    setup: Setup, state: Progress, cfg: TrainConfig, pre: PreprocessConfig, progress: bool, log: logging.Logger | Any
) -> None:
    """Train and validate one epoch, keep the weights when it is the best so far, and checkpoint."""
    epoch = state.epoch
    frozen = epoch < cfg.head_only_epochs
    for parameter in setup.opt.backbone:
        parameter.requires_grad_(not frozen)
    setup.train_set.set_epoch(epoch)
    setup.generator.manual_seed(cfg.seed * 7919 + epoch)
    stats = train_epoch(
        setup.network,
        setup.loader,
        setup.opt,
        setup.dev,
        pre.dims,
        cfg.grad_accumulation,
        f"epoch {epoch + 1}/{cfg.epochs}",
        progress,
    )
    state.step += stats.steps
    val_loss, val_auroc = validate(setup.network, setup.val_loader, setup.opt.loss_fn, setup.dev, pre.dims)
    record = {
        "epoch": epoch + 1,
        "train_loss": stats.train_loss,
        "val_loss": val_loss,
        "val_auroc": val_auroc,
        "lr": setup.opt.head_lr,
        "images_per_s": stats.images_per_s,
        "head_only": frozen,
    }
    if state.observe(record):
        _save_weights(setup.files.weights, setup.network)
    opt = setup.opt
    save_checkpoint(
        setup.files.checkpoint,
        {
            "model": setup.network.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict(),
            "rng": rng_state(),
            "loop": state.as_dict(),
            "sampler": {"generator": setup.generator.get_state(), "seed": cfg.seed, "epoch": epoch},
        },
    )
    log.info(
        "epoch %d/%d: train loss %.4f, val loss %.4f, val AUROC %.4f, %.1f images/s%s",
        epoch + 1,
        cfg.epochs,
        stats.train_loss,
        val_loss,
        val_auroc,
        stats.images_per_s,
        " (head only)" if frozen else "",
    )


def _finalise(
    setup: Setup, state: Progress, cfg: TrainConfig, pre: PreprocessConfig, aug: AugmentConfig
) -> TrainResult:
    """Write the model card, the history and the learning curves (each only when changed)."""
    completed = state.finished(cfg.epochs, cfg.patience)
    card = model_card(
        CardFacts(
            setup.data,
            setup.classifier,
            cfg,
            pre,
            aug,
            state,
            setup.dev.description,
            completed,
            setup.opt.backbone_factor,
        )
    )
    files = setup.files
    write_bytes_if_changed(files.card, json.dumps(card, indent=2).encode())
    write_bytes_if_changed(files.history, json.dumps(state.history, indent=2).encode())
    if state.history:
        plot_learning_curves(state.history, files.curves)
    return TrainResult(files.root, card, state.history, completed)


def _save_weights(path: Path, model: nn.Module) -> None:
    save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
