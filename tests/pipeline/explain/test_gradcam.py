"""GradCAM's target layer: the deepest ResNet stage with a map of at least 7 cells per axis."""

from __future__ import annotations

import pytest
import torch

from pipeline.explain.attribution import attribute
from pipeline.explain.gradcam import gradcam_layer
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig


@pytest.fixture(scope="module")
def resnet_2d() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(2, PreprocessConfig(dims=2, input_size=(32, 32))).network.eval()


@pytest.mark.parametrize(
    ("size", "layer", "cells"), [(32, "layer1", 8), (64, "layer2", 8), (128, "layer3", 8), (224, "layer4", 7)]
)
def test_the_deepest_stage_with_a_7_cell_map_is_chosen(resnet_2d: torch.nn.Module, size: int, layer: str, cells: int) -> None:
    choice = gradcam_layer(resnet_2d, (size, size))
    assert (choice.name, choice.map_shape, choice.input_shape) == (layer, (cells, cells), (size, size))
    assert gradcam_layer(resnet_2d, (size, size)) is choice  # probed once per model and input shape
    assert choice.to_dict()["map_size"] == [cells, cells] and layer in choice.describe()


def test_inputs_too_small_for_7_cells_get_the_largest_map(resnet_2d: torch.nn.Module) -> None:
    assert gradcam_layer(resnet_2d, (16, 16)).name == "layer1"  # 4x4: still better than layer4's 1x1


def test_3d_choice_and_attribution_use_the_chosen_stage() -> None:
    torch.manual_seed(0)
    model = build_classifier(2, PreprocessConfig(dims=3, input_size=(32, 32, 32))).network.eval()
    assert gradcam_layer(model, (32, 32, 32)).map_shape == (8, 8, 8)  # layer1; layer4 would be 1x1x1
    assert gradcam_layer(model, (64, 64, 64)).name == "layer2"
    x = torch.rand(1, 1, 32, 32, 32)
    cam = attribute(model, x, 1, "gradcam")
    assert (cam.layer, cam.map_shape, cam.signed.shape) == ("layer1", (8, 8, 8), (32, 32, 32))
    assert cam.signed.std() > 0  # not one uniform cell
    forced = attribute(model, x, 1, "gradcam", layer=model.layer4)
    assert (forced.layer, forced.map_shape) == ("layer4", (1, 1, 1))
