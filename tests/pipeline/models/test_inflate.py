"""I3D inflation: 3D ResNet-50 from 2D weights, equivalence on stacked images, shapes, BatchNorm guard."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.models import (
    Inflation,
    build_classifier,
    build_resnet50,
    final_feature_shape,
    inflate,
    min_batch_size,
)
from pipeline.preprocess import PreprocessConfig


@pytest.fixture(scope="module")
def model_2d() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_resnet50(num_classes=2).network.eval()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("kwargs", [{"mode": "centre"}, {"mode": "average", "depth_kernel": 1, "stem_depth_kernel": 1}])
def test_identical_slices_give_the_2d_logits(model_2d: torch.nn.Module, kwargs: dict) -> None:
    image = torch.randn(2, 1, 64, 64)
    model_3d = inflate(model_2d, Inflation(**kwargs)).eval()
    with torch.no_grad():
        assert _relative(model_2d(image), model_3d(image.unsqueeze(2).repeat(1, 1, 16, 1, 1))) < 1e-4


def test_average_mode_with_depth_kernel_3(model_2d: torch.nn.Module) -> None:
    image = torch.randn(2, 1, 64, 64)
    volume = image.unsqueeze(2).repeat(1, 1, 16, 1, 1)
    with torch.no_grad():
        reference = model_2d(image)
        replicate = _relative(reference, inflate(model_2d, Inflation(mode="average", depth_kernel=3)).eval()(volume))
        zeros = _relative(reference, inflate(model_2d, Inflation(mode="average", depth_kernel=3, depth_padding="zeros")).eval()(volume))
    print(f"average mode, depth kernel 3, D=16: relative logit difference {replicate:.2e} with replicated edge "
          f"slices (default), {zeros:.2f} with zero depth padding (random-init network)")
    assert replicate < 1e-4
    assert zeros > 10 * replicate  # the difference comes from the depth borders alone


def test_inflated_weights_and_the_2d_model_are_untouched(model_2d: torch.nn.Module) -> None:
    before = {k: v.clone() for k, v in model_2d.state_dict().items()}
    model_3d = inflate(model_2d, Inflation(mode="average", depth_kernel=3))
    conv = model_3d.layer1[0].conv2.weight
    assert conv.shape == (64, 64, 3, 3, 3)
    torch.testing.assert_close(conv.sum(dim=2), model_2d.layer1[0].conv2.weight)
    assert model_3d.layer1[0].conv1.weight.shape[2:] == (1, 1, 1)
    assert all(torch.equal(before[k], v) for k, v in model_2d.state_dict().items())


def test_shapes_at_128_cubed_and_224_squared(model_2d: torch.nn.Module) -> None:
    model_3d = inflate(model_2d)
    assert final_feature_shape(model_3d, (128, 128, 128)) == (4, 4, 4)
    assert final_feature_shape(model_2d, (224, 224)) == (7, 7)
    with torch.device("meta"):
        assert model_3d.to("meta")(torch.empty(2, 1, 128, 128, 128)).shape == (2, 2)


def test_stem_depth_stride_is_configurable_for_thick_slices(model_2d: torch.nn.Module) -> None:
    model_3d = inflate(model_2d, Inflation(stem_depth_kernel=1, stem_depth_stride=1))
    assert model_3d.conv1.stride == (1, 2, 2) and final_feature_shape(model_3d, (8, 64, 64)) == (1, 2, 2)


def test_batchnorm_guard_at_32_cubed(model_2d: torch.nn.Module) -> None:
    model_3d = inflate(model_2d)
    assert final_feature_shape(model_3d, (32, 32, 32)) == (1, 1, 1)
    assert min_batch_size(model_3d, (32, 32, 32)) == 2 and min_batch_size(model_3d, (64, 64, 64)) == 1
    model_3d.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model_3d(torch.randn(1, 1, 32, 32, 32))  # why the guard exists
    assert model_3d(torch.randn(2, 1, 32, 32, 32)).shape == (2, 2)


def test_bad_inflation_arguments_are_user_errors(model_2d: torch.nn.Module) -> None:
    with pytest.raises(UserInputError):
        inflate(model_2d, Inflation(mode="bilinear"))
    with pytest.raises(UserInputError):
        inflate(model_2d, Inflation(depth_kernel=2))
    with pytest.raises(UserInputError):
        Inflation(stem_depth_kernel=0)


def test_the_3d_classifier_records_its_inflation_and_keeps_the_2d_keys() -> None:
    torch.manual_seed(0)
    built = build_classifier(2, PreprocessConfig(dims=3, input_size=(32, 32, 32)), inflation="centre")
    assert built.dims == 3 and built.inflation == Inflation(mode="centre")
    assert built.weights_source.kind == "random-init" and not hasattr(built.network, "inflation")
    torch.manual_seed(0)
    assert list(built.network.state_dict()) == list(build_resnet50(num_classes=2).network.state_dict())
