"""The typed record of a built classifier: the network and what the model card says about it.

The network is a plain ``nn.Module`` (its state-dict keys are torchvision's ResNet-50 keys); how it
was made (starting weights, inflation) lives beside it in :class:`Classifier`, never on the module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.models.inflate import Inflation
from pipeline.models.weights import WeightsSource


@dataclass(frozen=True)
class Classifier:
    """A ResNet-50 for ``(N, in_channels, H, W)`` (``dims == 2``) or ``(N, in_channels, D, H, W)``
    (``dims == 3``) inputs with ``num_classes`` logits.

    ``weights_source`` says where the starting weights came from; ``inflation`` is how a 3D network
    was inflated from the 2D one (None for 2D).
    """

    network: nn.Module
    dims: int
    num_classes: int
    in_channels: int
    weights_source: WeightsSource
    inflation: Inflation | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from ImageNet weights (not random initialisation)."""
        return self.weights_source.kind != "random-init"
