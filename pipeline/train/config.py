"""The trainer's typed config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserInputError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Learning rates are per optimiser step; epochs count passes over ``train``.

    Attributes:
        lr: head learning rate; the backbone gets ``lr * backbone_lr_factor`` (discriminative rates)
            when it starts from ImageNet weights, and ``lr`` when it starts from random initialisation.
        warmup_epochs: linear warm-up length, then cosine decay to zero by the last epoch.
        head_only_epochs: epochs that train only the new head before the backbone is unfrozen.
        patience: epochs without a better validation AUROC before early stopping.
        grad_accumulation: batches per optimiser step (for large 3D volumes).
        class_weighting: weight the loss by inverse class frequency in the training set.
        weights: None (random init), ``"imagenet"`` (torch hub cache) or a torchvision state-dict path.
        inflation, depth_kernel: how the 3D model is inflated from the 2D one.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        deterministic: deterministic algorithms (bitwise-reproducible runs and resumes on one machine).
        val_fraction: validation share of patients when the catalogue has no ``val`` split.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    head_only_epochs: int = 0
    patience: int = 5
    grad_accumulation: int = 1
    class_weighting: bool = True
    weights: str | None = None
    inflation: str = "average"
    depth_kernel: int = 3
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise UserInputError("epochs, batch size and gradient accumulation must be at least 1")
        if self.lr <= 0 or not 0 < self.val_fraction < 1:
            raise UserInputError("learning rate must be positive and val_fraction between 0 and 1")
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
