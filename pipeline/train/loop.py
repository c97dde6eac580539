"""One epoch of training and one pass of validation, and the optimiser that drives them: AdamW with
discriminative learning rates, linear warm-up then cosine decay per optimiser step, class-weighted
cross-entropy, gradient accumulation, and AMP (with a GradScaler for fp16) on CUDA.

In a distributed run (:class:`~pipeline.train.distributed.World`) each process trains on its shard
of every global batch. The loss is normalised by the class weights of the *global* batch, so DDP's
gradient average is exactly the gradient one process would compute on the whole batch. Validation
runs on each process's shard; the predictions are gathered and the metrics computed on rank 0.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.settings.train import TrainConfig
from pipeline.train.device import DeviceSettings
from pipeline.train.distributed import World, all_reduce_sum, gather_objects

SINGLE = World()

HEAD_PREFIX = "fc."


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
class Optimisation:
    """The loss and the optimiser state of one run (everything but the network that a checkpoint resumes).

    ``backbone`` holds the non-head parameters (frozen during head-only epochs); they learn at
    ``lr * backbone_factor``, and the head (``optimizer.param_groups[1]``) at ``lr``. ``ema`` is the
    exponential moving average of the weights (and BatchNorm buffers), updated after every optimiser
    step, when ``TrainConfig.ema_decay`` is set; validation and the saved weights then use it.
    """

    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    backbone: list[nn.Parameter]
    backbone_factor: float
    label_smoothing: float = 0.0
    ema: AveragedModel | None = None

    def evaluated(self, model: nn.Module) -> nn.Module:
        """What validation scores and the weights file keeps: the EMA of ``model`` when there is one."""
        return self.ema.module if self.ema is not None else model

    @property
    def head_lr(self) -> float:
        return float(self.optimizer.param_groups[1]["lr"])

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor, world: World = SINGLE) -> torch.Tensor:
        """Class-weighted cross-entropy of this process's share of the global batch, normalised by the
        global batch's summed class weights (times the world size, which DDP's average divides out).
        In one process: the weighted mean of :class:`torch.nn.CrossEntropyLoss`."""
        weight = getattr(self.loss_fn, "weight", None)
        per_image = F.cross_entropy(
            logits, labels, weight=weight, reduction="none", label_smoothing=self.label_smoothing
        )
        norm = weight[labels].sum() if weight is not None else per_image.new_tensor(float(len(labels)))
        if world.distributed:
            norm = all_reduce_sum(world, norm) / world.world_size
        return per_image.sum() / norm


def build_optimisation(
    network: nn.Module,
    targets: torch.Tensor,
    n_classes: int,
    pretrained: bool,
    cfg: TrainConfig,
    dev: DeviceSettings,
    batches_per_epoch: int,
) -> Optimisation:
    """Loss weighted by inverse class frequency of ``targets`` (when ``cfg.class_weighting``), AdamW
    over backbone and head, and the per-step schedule. A random-init backbone learns at the full ``lr``:
    there is nothing in it to preserve."""
    counts = torch.bincount(targets, minlength=n_classes).float()
    weights = counts.sum() / (n_classes * counts) if cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev.device) if weights is not None else None)
    head = [p for n, p in network.named_parameters() if n.startswith(HEAD_PREFIX)]
    backbone = [p for n, p in network.named_parameters() if not n.startswith(HEAD_PREFIX)]
    backbone_factor = cfg.backbone_lr_factor if pretrained else 1.0
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr * backbone_factor}, {"params": head, "lr": cfg.lr}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    )
    scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.needs_scaler)
    ema = (
        AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay > 0
        else None
    )
    return Optimisation(loss_fn, optimizer, scheduler, scaler, backbone, backbone_factor, cfg.label_smoothing, ema)


@dataclass(frozen=True)
class EpochStats:
    """One training pass: mean training loss per image, images seen, optimiser steps taken, seconds."""

    train_loss: float
    seen: int
    steps: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.seen / self.seconds


def train_epoch(
    network: nn.Module,
    loader: DataLoader,
    opt: Optimisation,
    dev: DeviceSettings,
    dims: int,
    grad_accumulation: int,
    description: str,
    progress: bool,
    world: World = SINGLE,
) -> EpochStats:
    """One pass over ``loader`` with an optimiser step every ``grad_accumulation`` batches (and after the last).
    ``progress`` shows a tqdm bar on an interactive terminal (rank 0 only). ``network`` may be wrapped in
    DDP; gradients are then synchronised once per optimiser step. The figures returned are global."""
    network.train()
    started, seen, steps, total_loss = time.perf_counter(), 0, 0, 0.0
    batches = tqdm(
        loader, desc=description, unit="batch", leave=False, disable=None if progress and world.is_main else True
    )  # None: only on an interactive terminal
    for index, (images, labels) in enumerate(batches):
        images = images.to(dev.device, non_blocking=dev.non_blocking, memory_format=dev.memory_format(dims))
        labels = labels.to(dev.device, non_blocking=dev.non_blocking)
        stepping = (index + 1) % grad_accumulation == 0 or index + 1 == len(loader)
        no_sync = network.no_sync() if isinstance(network, DistributedDataParallel) and not stepping else nullcontext()
        with no_sync:
            with dev.autocast():
                loss = opt.training_loss(network(images).float(), labels, world)
            opt.scaler.scale(loss / grad_accumulation).backward()
        if stepping:
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scheduler.step()
            if opt.ema is not None:
                opt.ema.update_parameters(network)
            steps += 1
        total_loss += float(loss.detach()) * len(labels)
        seen += len(labels)
    totals = all_reduce_sum(world, torch.tensor([total_loss, float(seen)], dtype=torch.float64, device=dev.device))
    global_seen = int(totals[1])
    return EpochStats(float(totals[0]) / global_seen, global_seen, steps, time.perf_counter() - started)


def validate(
    network: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    dev: DeviceSettings,
    dims: int,
    world: World = SINGLE,
) -> tuple[float, float]:
    """Mean loss per image and AUROC (one-vs-rest macro for more than two classes; NaN when the
    labels hold a single class) over ``loader`` (this process's shard). In a distributed run every
    shard's predictions are gathered and the figures computed on rank 0 (NaN on the other ranks)."""
    network.eval()
    losses, probs, targets = [], [], []
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(dev.device, non_blocking=dev.non_blocking, memory_format=dev.memory_format(dims))
            labels = labels.to(dev.device, non_blocking=dev.non_blocking)
            with dev.autocast():
                logits = network(images)
            losses.append(float(loss_fn(logits.float(), labels)) * len(labels))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            targets.append(labels.cpu())
    shard = (sum(losses), torch.cat(probs).numpy() if probs else None, torch.cat(targets).numpy() if targets else None)
    shards = gather_objects(world, shard)
    if not world.is_main:
        return float("nan"), float("nan")
    p = np.concatenate([s[1] for s in shards if s[1] is not None])
    y = np.concatenate([s[2] for s in shards if s[2] is not None])
    total_loss = sum(s[0] for s in shards)
    if len(np.unique(y)) < 2:
        auroc = float("nan")
    elif p.shape[1] == 2:
        auroc = float(roc_auc_score(y, p[:, 1]))
    else:
        auroc = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1]))))
    return total_loss / len(y), auroc
