"""The 2D ResNet-50: MONAI's network with torchvision's stem (7x7 stride-2 conv, then max-pool).

MONAI's ``resnet50(spatial_dims=2, conv1_t_stride=2, bias_downsample=False)`` has exactly
torchvision's 320 state-dict keys, so torchvision-format ImageNet weights load into it by name.
MONAI's default stride-1 stem would cost 4x the compute.

>>> import torch
>>> model = build_resnet50(num_classes=2).network.eval()
>>> model(torch.zeros(1, 1, 64, 64)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

import logging

import torch
from monai.networks.nets import resnet50
from torch import nn

from pipeline.errors import UserInputError
from pipeline.models.record import Classifier
from pipeline.models.weights import (
    WeightsSource,
    find_imagenet_weights,
    load_state_dict,
)

log = logging.getLogger(__name__)
HEAD_PREFIX = "fc."


def build_resnet50(num_classes: int, in_channels: int = 1, weights: str | None = None) -> Classifier:
    """A 2D ResNet-50 for input ``(N, in_channels, H, W)`` with a new ``num_classes`` head.

    ``weights``: None (random init), ``"imagenet"`` (torch hub cache) or a path to a torchvision
    state dict. Every backbone key must be present with a matching shape (no silent partial load).
    ImageNet's RGB ``conv1`` is adapted: summed over RGB for 1 channel, its mean repeated otherwise.
    The record's ``weights_source`` says which starting weights the network got, for the model card.
    """
    if num_classes < 1 or in_channels < 1:
        raise UserInputError("num_classes and in_channels must be positive")
    model = resnet50(
        spatial_dims=2, n_input_channels=in_channels, num_classes=num_classes, conv1_t_stride=2, bias_downsample=False
    )
    path = find_imagenet_weights(weights)
    source = WeightsSource("random-init")
    if path is not None:
        state, digest = load_state_dict(path)
        load_backbone(model, state, in_channels)
        source = WeightsSource("imagenet-file", str(path), digest)
        log.info("loaded ImageNet ResNet-50 weights (sha256 %s)", digest[:12])
    return Classifier(model, dims=2, num_classes=num_classes, in_channels=in_channels, weights_source=source)


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], in_channels: int) -> None:
    """Copy every non-head tensor of ``state`` into ``model`` by name; raise on any mismatch."""
    target = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    expected = {k for k in target if not k.startswith(HEAD_PREFIX)}
    missing, unexpected = sorted(expected - set(backbone)), sorted(set(backbone) - expected)
    if missing or unexpected:
        raise UserInputError(
            f"weights do not match ResNet-50: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    adapted = dict(backbone)
    conv1 = backbone["conv1.weight"]
    if conv1.shape[1] != in_channels:
        adapted["conv1.weight"] = (
            conv1.sum(dim=1, keepdim=True)
            if in_channels == 1
            else conv1.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
        )
    wrong = [k for k, v in adapted.items() if v.shape != target[k].shape]
    if wrong:
        raise UserInputError(f"weights have mismatched shapes for {len(wrong)} key(s), e.g. {wrong[0]}")
    target.update(adapted)
    model.load_state_dict(target, strict=True)
