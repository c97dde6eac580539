"""ResNet-50 classifiers: the 2D network (torchvision-equivalent) and its I3D inflation to 3D."""

from __future__ import annotations

from pipeline.models.classifier import add_head_dropout, build_classifier
from pipeline.models.inflate import (
    Inflation,
    final_feature_shape,
    inflate,
    min_batch_size,
)
from pipeline.models.record import Classifier
from pipeline.models.resnet import build_resnet50
from pipeline.models.weights import WeightsSource, find_imagenet_weights

__all__ = [
    "Classifier",
    "Inflation",
    "WeightsSource",
    "add_head_dropout",
    "build_classifier",
    "build_resnet50",
    "final_feature_shape",
    "find_imagenet_weights",
    "inflate",
    "min_batch_size",
]
