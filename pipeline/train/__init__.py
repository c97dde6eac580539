"""Training: a resumable, device-agnostic fine-tuning loop for the 2D and 3D ResNet-50."""

from __future__ import annotations

from pipeline.settings.train import TrainConfig
from pipeline.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
