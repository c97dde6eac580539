"""The classifier of a preprocessing config: the 2D ResNet-50, or its 3D inflation."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.inflate import Inflation, inflate
from pipeline.models.record import Classifier
from pipeline.models.resnet import build_resnet50

if TYPE_CHECKING:
    from pipeline.preprocess import PreprocessConfig


def build_classifier(
    num_classes: int,
    pre: PreprocessConfig,
    weights: str | None = None,
    inflation: str = "average",
    depth_kernel: int = 3,
) -> Classifier:
    """A ResNet-50 for ``pre.dims`` with ``pre.in_channels`` inputs; the 3D one is inflated from the
    2D one (so ImageNet weights, when given, reach both). The record's ``weights_source`` says where
    the starting weights came from and ``inflation`` how the 3D network was made."""
    built = build_resnet50(num_classes, in_channels=pre.in_channels, weights=weights)
    if pre.dims != 3:
        return built
    spec = Inflation(mode=inflation, depth_kernel=depth_kernel)
    return replace(built, network=inflate(built.network, spec), dims=3, inflation=spec)


class _HeadDropout:
    """A forward pre-hook on the head: dropout on its input (the pooled features) while training.
    A hook, not a layer, so the state-dict keys stay torchvision's and inference needs no change."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (F.dropout(inputs[0], self.p, module.training), *inputs[1:])


def add_head_dropout(network: nn.Module, p: float) -> None:
    """Dropout with probability ``p`` on the features entering ``network.fc``, in training mode only.

    >>> from pipeline.models.resnet import build_resnet50
    >>> net = build_resnet50(2).network
    >>> add_head_dropout(net, 0.5)
    >>> _ = net.eval(); torch.equal(net.fc(torch.ones(1, 2048)), net.fc(torch.ones(1, 2048)))
    True
    """
    head = network.get_submodule("fc")
    head.register_forward_pre_hook(_HeadDropout(p))
