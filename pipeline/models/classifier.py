"""The classifier of a preprocessing config: the 2D ResNet-50, or its 3D inflation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from pipeline.models.inflate import inflate
from pipeline.models.resnet import build_resnet50

if TYPE_CHECKING:
    from pipeline.preprocess import PreprocessConfig


def build_classifier(num_classes: int, pre: PreprocessConfig, weights: str | None = None, inflation: str = "average",
                     depth_kernel: int = 3) -> nn.Module:
    """A ResNet-50 for ``pre.dims`` with ``pre.in_channels`` inputs; the 3D one is inflated from the
    2D one (so ImageNet weights, when given, reach both). ``model.weights_source`` says where the
    starting weights came from."""
    model = build_resnet50(num_classes, in_channels=pre.in_channels, weights=weights)
    source = model.weights_source  # type: ignore[attr-defined]
    if pre.dims == 3:
        model = inflate(model, mode=inflation, depth_kernel=depth_kernel)
        model.weights_source = source  # type: ignore[attr-defined]
    return model
