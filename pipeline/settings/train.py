"""The ``train`` settings group: optimisation of one training run (:class:`TrainConfig`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Literal

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class TrainConfig:
    """Optimisation settings (the ``train`` settings group). Learning rates are per optimiser step;
    epochs count passes over the ``train`` split. The backbone learns at ``lr * backbone_lr_factor``
    (discriminative rates) when it starts from ImageNet weights, and at ``lr`` from random
    initialisation; the learning rate warms up linearly, then decays on a cosine to zero by the last epoch.
    """

    epochs: int = setting(30, "passes over the training split (docs/recipe.md)")
    batch_size: int = setting(32, "images or volumes per batch (3D at 32^3 needs at least 2)")
    lr: float = setting(1e-3, "head learning rate; the backbone uses lr x backbone_lr_factor from ImageNet weights")
    backbone_lr_factor: float = setting(0.1, "backbone learning rate as a fraction of lr (ImageNet start only)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    warmup_epochs: float = setting(1.0, "linear warm-up length in epochs, then cosine decay")
    head_only_epochs: int = setting(0, "epochs training only the new head before the backbone is unfrozen")
    patience: int = setting(10, "epochs without a better validation score before early stopping")
    grad_accumulation: int = setting(1, "batches per optimiser step (for large 3D volumes)")
    class_weighting: bool = setting(True, "weight the loss by inverse class frequency in the training set")
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing (0: hard labels)")
    ema_decay: float = setting(
        0.0, "exponential moving average of the weights per optimiser step (0: off); validation and weights use it"
    )
    head_dropout: float = setting(0.0, "dropout probability on the pooled features before the head")
    tta_flips: bool = setting(
        True, "predict as the mean over the image and its flip along each spatial axis (test-time augmentation)"
    )
    weights: str | None = setting(
        None,
        "ImageNet weights: a torchvision .pth path, or 'imagenet' for the torch hub cache; none = random init",
        metavar="PATH|imagenet",
    )
    inflation: Literal["average", "centre"] = setting("average", "how 2D kernels inflate to 3D (I3D-style)")
    depth_kernel: int = setting(3, "depth of the inflated 3D kernels")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto (CUDA when available), cpu or cuda")
    seed: int = setting(0, "random seed (splits, initialisation, augmentation)")
    deterministic: bool = setting(
        False, "deterministic algorithms: bitwise-identical reruns and resumes on one machine"
    )
    num_workers: int = setting(0, "data-loader worker processes (each has its own augmentation stream)")
    val_fraction: float = setting(0.2, "validation share of patients when the catalogue has no val split")

    def __post_init__(self) -> None:
        if self.weights == "":  # an empty field in a form means "no weights"
            object.__setattr__(self, "weights", None)
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise UserInputError("epochs, batch size and gradient accumulation must be at least 1")
        if self.lr <= 0 or not 0 < self.val_fraction < 1:
            raise UserInputError("learning rate must be positive and val_fraction between 0 and 1")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.ema_decay < 1 or not 0 <= self.head_dropout < 1:
            raise UserInputError("label smoothing, EMA decay and head dropout must be in [0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserInputError("device must be auto, cpu or cuda")

    def identity(self) -> dict[str, Any]:
        """Settings that change the trained weights (the device does not; worker count splits the augmentation streams)."""
        settings = asdict(self)
        for key in ("device",):
            settings.pop(key)
        return settings

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()
