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

Under torchrun the same function runs in every process (:mod:`pipeline.train.distributed`): rank 0
preprocesses, holds the work folder's lock and writes every file; all ranks train the network
wrapped in ``DistributedDataParallel`` on their shard of each global batch (``DistributedSampler``,
re-seeded every epoch), and the early-stopping decision is rank 0's, broadcast. The sampler is the
same in one process, so a run resumes with any number of processes; the checkpoint holds the plain
(unwrapped) state dict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.errors import UserInputError
from pipeline.layout import ModelFiles, Workdir
from pipeline.locking import workdir_lock
from pipeline.models import Classifier, add_head_dropout, build_classifier, min_batch_size
from pipeline.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    build_augmentation,
    preprocess_catalog,
)
from pipeline.settings.distributed import DistributedSettings
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
from pipeline.train.device import DeviceSettings
from pipeline.train.distributed import World, broadcast_decision, failed_collective, join_world, on_main
from pipeline.train.events import notify_epoch, notify_finish
from pipeline.train.launch import check_global_batch
from pipeline.train.loop import Optimisation, build_optimisation, train_epoch, validate
from pipeline.train.progress import Progress
from pipeline.train.syncbn import synchronise_batchnorm

module_log = logging.getLogger(__name__)
#: Defaults (module-level values, not calls in the signature).
DEFAULT_AUGMENT = AugmentConfig()
SINGLE_PROCESS = DistributedSettings()


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
    sampler: DistributedSampler[Any]  # shuffles with seed + epoch (set every epoch); one replica in one process
    opt: Optimisation
    dev: DeviceSettings
    world: World
    model: nn.Module  # what trains: the network, wrapped in DDP in a distributed run
    sync_bn: bool

    @property
    def network(self) -> nn.Module:
        """The plain network (its state dict is what checkpoints and weights hold)."""
        return self.classifier.network

    @property
    def per_rank_batch(self) -> int:
        return int(self.loader.batch_size or 0)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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
    dist: DistributedSettings = SINGLE_PROCESS,
) -> TrainResult:
    """Train on the catalogue's labelled scans (split ``train``, early-stopping on ``val``).

    ``scans`` (catalogue rows) restricts training to a subset, such as the training folds of a
    cross-validation: their ``split`` column is then ignored and early stopping uses a seeded
    patient-grouped ``val_fraction`` of the subset, so nothing outside ``scans`` is ever seen.
    ``stop_after`` pauses after that many epochs of this call (``resume`` continues); ``progress``
    shows a progress bar on an interactive terminal. Under torchrun every process calls this, and
    every process returns the same result; ``dist`` says how they cooperate.
    """
    world, dev = join_world(cfg.device, cfg.deterministic, dist.collective_timeout)
    with _main_lock(workdir, world):
        try:
            return _train(workdir, cfg, pre, aug, resume, stop_after, progress, log, scans, dist, world, dev)
        except RuntimeError as error:
            if world.distributed and _is_collective_failure(error):
                raise failed_collective(error) from error
            raise


def _main_lock(workdir: Path, world: World) -> AbstractContextManager[None]:
    """The work folder's writer lock, held by rank 0 (the only writer) for the whole training."""
    return workdir_lock(workdir, "train") if world.is_main else nullcontext()


def _is_collective_failure(error: RuntimeError) -> bool:
    """A collective that failed because another rank died or hung (gloo and NCCL word it differently)."""
    text = str(error).lower()
    return isinstance(error, torch.distributed.DistBackendError) or any(
        word in text for word in ("connection closed", "connection reset", "timed out", "timeout", "broken pipe")
    )


def _train(
    workdir: Path,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig,
    resume: bool,
    stop_after: int | None,
    progress: bool,
    log: logging.Logger | Any,
    scans: pd.DataFrame | None,
    dist: DistributedSettings,
    world: World,
    dev: DeviceSettings,
) -> TrainResult:
    _seed_everything(cfg.seed)
    per_rank_batch = check_global_batch(cfg.batch_size, world.world_size)
    data = on_main(world, lambda: _training_data(workdir, cfg, pre, aug, scans, log))
    setup = _setup(workdir, data, cfg, pre, aug, dev, world, per_rank_batch, dist.sync_bn_for(pre.dims))
    state = _resume(setup, log) if resume else Progress()
    if world.is_main:
        log.info(
            "training %s on %s: %d train / %d val scans (%s), classes %s, weights: %s, backbone lr x%g",
            data.model_id,
            _where(setup),
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
    result = on_main(world, lambda: _finalise(setup, state, cfg, pre, aug))
    if world.is_main:
        notify_finish(result)
    return result


def _where(setup: Setup) -> str:
    if not setup.world.distributed:
        return setup.dev.description
    return (
        f"{setup.world.world_size} processes ({setup.world.backend}, {setup.dev.description}, "
        f"{setup.per_rank_batch} per process{', SyncBatchNorm' if setup.sync_bn else ''})"
    )


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
    workdir: Path,
    data: TrainingData,
    cfg: TrainConfig,
    pre: PreprocessConfig,
    aug: AugmentConfig,
    dev: DeviceSettings,
    world: World,
    per_rank_batch: int,
    sync_bn: bool,
) -> Setup:
    """The model folder, the network on its device (in DDP when distributed), the data loaders and the optimiser."""
    files = Workdir(workdir).model(data.model_id)
    if world.is_main:
        files.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone (not on what preprocessing drew)
    classifier = build_classifier(len(data.classes), pre, cfg.weights, cfg.inflation, cfg.depth_kernel)
    if cfg.head_dropout > 0:
        add_head_dropout(classifier.network, cfg.head_dropout)
    needed = min_batch_size(classifier.network, pre.input_size, pre.in_channels)
    synchronised = sync_bn and world.distributed
    seen_by_batchnorm = cfg.batch_size if synchronised else per_rank_batch
    if seen_by_batchnorm < needed:
        per = "" if seen_by_batchnorm == cfg.batch_size else f" ({per_rank_batch} per process without --sync-bn)"
        raise UserInputError(
            f"batch size {cfg.batch_size}{per} cannot train a {pre.dims}D model at {pre.input_size}: the last stage "
            f"is 1 voxel, so BatchNorm needs a batch of at least {needed} (or use a larger input)"
        )
    network = (
        synchronise_batchnorm(classifier.network, dev.device.type == "cuda") if synchronised else classifier.network
    )
    # torch's Module.to overloads omit memory_format, which it accepts at runtime
    network = network.to(dev.device, memory_format=dev.memory_format(pre.dims))  # type: ignore[call-overload]
    classifier = replace(classifier, network=network)
    first_stream = world.rank * (cfg.num_workers + 1)
    train_set = CachedScans(
        workdir, data.split.train, data.classes, build_augmentation(aug, pre.dims), cfg.seed, first_stream
    )
    val_set = CachedScans(workdir, data.split.val, data.classes)
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=cfg.seed * 7919, drop_last=True
    )
    loader = DataLoader(
        train_set,
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=dev.pin_memory,
        drop_last=needed > 1,
        worker_init_fn=seed_worker,
    )
    val_shard = Subset(val_set, range(world.rank, len(val_set), world.world_size))  # no padding, no repeats
    val_loader = DataLoader(
        val_shard, batch_size=per_rank_batch, num_workers=cfg.num_workers, pin_memory=dev.pin_memory
    )
    if len(loader) == 0:
        raise UserInputError(f"{len(train_set)} training scans are fewer than one batch of {cfg.batch_size}")
    opt = build_optimisation(
        classifier.network, train_set.targets, len(data.classes), classifier.pretrained, cfg, dev, len(loader)
    )
    model: nn.Module = network
    if world.distributed:
        model = DistributedDataParallel(
            network,
            device_ids=[dev.device.index] if dev.device.type == "cuda" else None,
            find_unused_parameters=cfg.head_only_epochs > 0,  # the frozen backbone has no gradients then
        )
    return Setup(data, files, classifier, train_set, loader, val_loader, sampler, opt, dev, world, model, synchronised)


def _resume(setup: Setup, log: logging.Logger | Any) -> Progress:
    """Restore network, optimiser, scheduler, scaler and every RNG from ``checkpoint.pt``; fresh
    progress when there is none. Every rank reads the same file (rank 0 wrote it, whatever the
    number of processes then)."""
    exists = broadcast_decision(setup.world, setup.files.checkpoint.exists())
    if not exists:
        if setup.world.is_main:
            log.warning("no checkpoint for %s: starting from scratch", setup.data.model_id)
        return Progress()
    saved = load_checkpoint(setup.files.checkpoint)
    setup.network.load_state_dict(saved["model"])
    setup.opt.optimizer.load_state_dict(saved["optimizer"])
    setup.opt.scheduler.load_state_dict(saved["scheduler"])
    setup.opt.scaler.load_state_dict(saved["scaler"])
    if setup.opt.ema is not None:
        setup.opt.ema.load_state_dict(saved["ema"])
    restore_rng(saved["rng"])
    state = Progress.from_dict(saved["loop"])
    if setup.world.is_main:
        log.info("resuming %s after epoch %d", setup.data.model_id, state.epoch)
    return state


def _epoch(
    setup: Setup, state: Progress, cfg: TrainConfig, pre: PreprocessConfig, progress: bool, log: logging.Logger | Any
) -> None:
    """Train and validate one epoch, keep the weights when it is the best so far, and checkpoint (rank 0)."""
    epoch, world = state.epoch, setup.world
    frozen = epoch < cfg.head_only_epochs
    for parameter in setup.opt.backbone:
        parameter.requires_grad_(not frozen)
    setup.train_set.set_epoch(epoch)
    setup.sampler.set_epoch(epoch)
    stats = train_epoch(
        setup.model,
        setup.loader,
        setup.opt,
        setup.dev,
        pre.dims,
        cfg.grad_accumulation,
        f"epoch {epoch + 1}/{cfg.epochs}",
        progress,
        world,
    )
    state.step += stats.steps
    evaluated = setup.opt.evaluated(setup.model)
    val_loss, val_auroc = validate(evaluated, setup.val_loader, setup.opt.loss_fn, setup.dev, pre.dims, world)
    record = {
        "epoch": epoch + 1,
        "train_loss": stats.train_loss,
        "val_loss": val_loss,
        "val_auroc": val_auroc,
        "lr": setup.opt.head_lr,
        "images_per_s": stats.images_per_s,
        "head_only": frozen,
    }
    record = broadcast_decision(world, record)  # rank 0 computed the validation figures
    improved = state.observe(record)
    if not world.is_main:
        return
    opt = setup.opt
    if improved:
        _save_weights(setup.files.weights, opt.evaluated(setup.network))
    save_checkpoint(
        setup.files.checkpoint,
        {
            "model": setup.network.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict(),
            **({"ema": opt.ema.state_dict()} if opt.ema is not None else {}),
            "rng": rng_state(),
            "loop": state.as_dict(),
            "sampler": {"seed": cfg.seed * 7919, "epoch": epoch, "world_size": world.world_size},
        },
    )
    notify_epoch(record)
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
            {
                **setup.world.describe(),
                "per_rank_batch": setup.per_rank_batch,
                "global_batch": cfg.batch_size,
                "sync_bn": setup.sync_bn,
            },
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
