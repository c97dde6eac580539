"""GradCAM's target layer: the deepest ResNet stage whose map is at least 7 cells per spatial axis.

GradCAM's resolution is that of the layer it reads. ``layer4`` of a ResNet-50 with the stride-2 stem
is 1/32 of the input per axis: 7x7 at 224 px but 2x2 at 64 px and 1x1 at 32 px, where every map is
a uniform tint. :func:`gradcam_layer` probes the output shape of ``layer4``, ``layer3``, ``layer2``
and ``layer1`` for the model's input shape (2D ``(H, W)`` or 3D ``(D, H, W)``) and picks the
deepest whose output is at least :data:`MIN_MAP_SIZE` in every spatial axis; when none is (tiny or
very thin inputs), ``layer1``, the largest map there is. For example, at 64 px: ``layer4`` 2x2,
``layer3`` 4x4, ``layer2`` 8x8, so ``layer2``; at 32 px ``layer1`` (8x8); at 224 px ``layer4``
(7x7). The probe runs on PyTorch's meta device (shapes only: no memory, no compute) and is cached
per model and input shape. Explanations, the report and scoring overlays all use this choice.
"""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.errors import UserInputError

log = logging.getLogger(__name__)
#: ResNet stages, deepest first.
STAGES = ("layer4", "layer3", "layer2", "layer1")
#: Smallest GradCAM map size per spatial axis (cells).
MIN_MAP_SIZE = 7

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], GradCamLayer]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class GradCamLayer:
    """The chosen stage, its output's spatial shape (the map size), and the input shape it was chosen for."""

    name: str
    map_shape: tuple[int, ...]
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "map_size": list(self.map_shape),
            "input_size": list(self.input_shape),
            "min_map_size": MIN_MAP_SIZE,
        }

    def describe(self) -> str:
        """E.g. ``layer2 (8 x 8 map for a 64 x 64 input)``."""
        return (
            f"{self.name} ({' x '.join(map(str, self.map_shape))} map for a "
            f"{' x '.join(map(str, self.input_shape))} input)"
        )


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s structure in eval mode whose parameters and buffers are meta tensors
    (copies no weights; runs give shapes without memory or compute)."""
    memo: dict[int, object] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo).eval()


def stage_shapes(model: nn.Module, input_shape: tuple[int, ...], in_channels: int) -> dict[str, tuple[int, ...]]:
    """Spatial output shape of each of :data:`STAGES` for one input of ``input_shape`` (forward hooks)."""
    missing = [name for name in STAGES if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise UserInputError(f"GradCAM needs a ResNet with stages {', '.join(STAGES)}; missing {', '.join(missing)}")
    probe = meta_copy(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in STAGES:
        probe.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: shapes.__setitem__(name, tuple(output.shape[2:]))
        )
    with torch.no_grad():
        probe(torch.zeros((1, in_channels, *input_shape), device="meta"))
    return shapes


def gradcam_layer(model: nn.Module, input_shape: tuple[int, ...], in_channels: int = 1) -> GradCamLayer:
    """The stage GradCAM reads for inputs of spatial ``input_shape`` (see the module docstring)."""
    input_shape = tuple(int(s) for s in input_shape)
    cached = _CACHE.setdefault(model, {})
    if input_shape not in cached:
        shapes = stage_shapes(model, input_shape, in_channels)
        name = next((n for n in STAGES if min(shapes[n]) >= MIN_MAP_SIZE), STAGES[-1])
        if min(shapes[name]) < MIN_MAP_SIZE:
            log.warning(
                "no ResNet stage gives a %d-cell GradCAM map for a %s input: using %s (%s)",
                MIN_MAP_SIZE,
                input_shape,
                name,
                shapes[name],
            )
        cached[input_shape] = GradCamLayer(name, shapes[name], input_shape)
    return cached[input_shape]
