"""The 2D ResNet-50: torchvision-equivalent keys and stem, strict weight loading, channel adaptation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from monai.networks.nets import resnet50

from pipeline.errors import UserInputError
from pipeline.models import build_resnet50


def _fake_imagenet(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict: 3-channel stem and a 1000-class head, random values."""
    torch.manual_seed(3)
    reference = resnet50(spatial_dims=2, n_input_channels=3, num_classes=1000, conv1_t_stride=2, bias_downsample=False)
    state = {k: torch.randn_like(v, dtype=torch.float32).to(v.dtype) if v.is_floating_point() else v
             for k, v in reference.state_dict().items()}
    torch.save(state, path)
    return state


def test_stem_is_torchvision_like_and_keys_match() -> None:
    built = build_resnet50(num_classes=2)
    model = built.network
    assert model.conv1.stride == (2, 2) and model.conv1.kernel_size == (7, 7)
    assert len(model.state_dict()) == 320 and built.weights_source.kind == "random-init"
    assert (built.dims, built.num_classes, built.in_channels, built.inflation) == (2, 2, 1, None)
    assert not built.pretrained and not hasattr(model, "weights_source")  # the record, not the module, says how


def test_shapes_at_224_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = build_resnet50(num_classes=3).network
        assert model(torch.empty(2, 1, 224, 224)).shape == (2, 3)


def test_weights_load_by_name_with_rgb_summed_for_one_channel(tmp_path: Path) -> None:
    state = _fake_imagenet(tmp_path / "resnet50.pth")
    built = build_resnet50(num_classes=2, in_channels=1, weights=str(tmp_path / "resnet50.pth"))
    loaded = built.network.state_dict()
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(loaded["layer3.4.conv2.weight"], state["layer3.4.conv2.weight"])
    assert loaded["fc.weight"].shape == (2, 2048)  # a new head
    assert built.weights_source.kind == "imagenet-file" and len(built.weights_source.sha256 or "") == 64
    assert built.pretrained
    rgb = build_resnet50(num_classes=2, in_channels=3, weights=str(tmp_path / "resnet50.pth"))
    torch.testing.assert_close(rgb.network.state_dict()["conv1.weight"], state["conv1.weight"])


def test_a_missing_key_is_an_error_not_a_partial_load(tmp_path: Path) -> None:
    state = _fake_imagenet(tmp_path / "full.pth")
    del state["layer2.1.bn2.running_var"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserInputError, match="1 missing key"):
        build_resnet50(num_classes=2, weights=str(tmp_path / "partial.pth"))
    state = _fake_imagenet(tmp_path / "full.pth")
    state["layer1.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(UserInputError, match="mismatched shapes"):
        build_resnet50(num_classes=2, weights=str(tmp_path / "bad_shape.pth"))


def test_imagenet_without_a_cached_file_warns_loudly_and_uses_random_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        model = build_resnet50(num_classes=2, weights="imagenet")
    assert model.weights_source.kind == "random-init"
    assert "NO IMAGENET WEIGHTS FOUND" in caplog.text and "RANDOM INITIALISATION" in caplog.text
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    _fake_imagenet(tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
    assert build_resnet50(num_classes=2, weights="imagenet").weights_source.kind == "imagenet-file"


def test_a_missing_weights_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        build_resnet50(num_classes=2, weights=str(tmp_path / "nope.pth"))
