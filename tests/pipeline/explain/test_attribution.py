"""Captum attributions in 2D and 3D, automatic IG batching, sanity and faithfulness checks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from pipeline.explain.attribution import AttributionConfig, attribute, auto_internal_batch_size, method_explainer
from pipeline.settings.explain import METHODS
from pipeline.explain.sanity import deletion_curve, randomisation_check
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig


def _model(dims: int, size: int) -> nn.Module:
    torch.manual_seed(0)
    return build_classifier(2, PreprocessConfig(dims=dims, input_size=(size,) * dims)).network.eval()


@pytest.mark.parametrize(("dims", "size"), [(2, 32), (3, 16)])
def test_every_method_gives_a_map_of_the_input_shape(dims: int, size: int) -> None:
    model = _model(dims, size)
    x = torch.rand(1, 1, *(size,) * dims)
    cfg = AttributionConfig(ig_steps=8, occlusion_window=8, occlusion_stride=8)
    for method in METHODS:
        result = attribute(model, x, 1, method, cfg)
        assert result.signed.shape == (size,) * dims and np.isfinite(result.signed).all(), method
        assert (result.importance >= 0).all()
    ig = attribute(model, x, 1, "integrated_gradients", AttributionConfig(ig_steps=64))
    assert ig.relative_delta is not None and ig.relative_delta < 0.05  # completeness


def test_internal_batch_size_follows_the_memory_budget() -> None:
    model = _model(3, 32)
    small = auto_internal_batch_size(model, (32, 32, 32), 1, 32, 200 * 2**20)
    large = auto_internal_batch_size(model, (32, 32, 32), 1, 32, 4000 * 2**20)
    assert 1 <= small < large <= 32


class _RegionModel(nn.Module):
    """Logits (-s, s) with s the mean of the top-left quarter: only that region matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, :, :8, :8].mean(dim=(1, 2, 3)) * 10 - 2
        return torch.stack([-score, score], dim=1)


def test_deletion_curve_of_an_oracle_map_beats_random_order() -> None:
    x = torch.rand(1, 1, 16, 16) * 0.5 + 0.5
    oracle = np.zeros((16, 16))
    oracle[:8, :8] = 1
    result = deletion_curve(_RegionModel(), x, 1, oracle, steps=16, random_orders=5)
    assert result["auc"] < result["random_auc"] and result["ratio"] < 0.8


def test_edge_detector_fails_randomisation_and_ig_of_a_trained_model_passes(trained_2d_model) -> None:
    model, inputs = trained_2d_model
    cases = [(x, 1) for x in inputs]

    def edges(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:  # ignores the model
        image = x[0, 0].numpy()
        return np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))

    edge = randomisation_check(edges, model, cases, threshold=0.5)
    assert not edge["passed"] and edge["final_spearman"] > 0.99
    ig = randomisation_check(method_explainer("integrated_gradients", AttributionConfig(ig_steps=16)), model, cases)
    assert ig["passed"] and ig["final_spearman"] < 0.5
    assert [s["randomised_down_to"] for s in ig["stages"]] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]


MEMORY_SCRIPT = """
import json, resource, sys, torch
from pipeline.explain.attribution import AttributionConfig, attribute
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig
torch.set_num_threads(2)
model = build_classifier(2, PreprocessConfig(dims=3, input_size=(64, 64, 64))).network.eval()
x = torch.rand(1, 1, 64, 64, 64)
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
with torch.no_grad():
    model(x)  # warm-up: one-time kernels and caches belong to the model, not to IG
before = max(rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
result = attribute(model, x, 1, "integrated_gradients", AttributionConfig(ig_steps=8, memory_budget_mb=float(sys.argv[1])))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth_mb": (peak - before) / 2**20, "batch": result.internal_batch_size}))
"""


@pytest.mark.timeout(600)
def test_integrated_gradients_on_a_64_cubed_volume_stays_under_its_memory_bound() -> None:
    budget_mb = 1200.0
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(budget_mb)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["batch"] < 8  # the budget forced internal batching
    assert measured["growth_mb"] < budget_mb, measured
