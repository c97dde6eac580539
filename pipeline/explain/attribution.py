"""Captum attributions of one class score, for 2D ``(1, C, H, W)`` and 3D ``(1, C, D, H, W)`` inputs.

Methods: ``integrated_gradients`` (baseline zeros or a Gaussian-blurred input; ``n_steps``;
``internal_batch_size`` chosen from a memory budget), ``saliency`` (|gradient|), ``gradcam``
(``LayerGradCam`` on the stage :func:`~pipeline.explain.gradcam.gradcam_layer` picks for the input's
shape, upsampled bilinearly/trilinearly to the input) and ``occlusion``
(a cube/square window, ``perturbations_per_eval`` at a time). Every method attributes the target
class's *logit*. Maps are summed over channels; :func:`importance` turns a signed map into the
non-negative one that is displayed, ranked and compared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from monai.transforms import GaussianSmooth
from torch import nn

from pipeline.errors import UserInputError
from pipeline.explain.gradcam import gradcam_layer, meta_copy
from pipeline.settings.explain import AttributionConfig

log = logging.getLogger(__name__)
#: How each method's signed map becomes importance: magnitude, or positive evidence only.
SIGNED_TO_IMPORTANCE = {
    "integrated_gradients": "abs",
    "saliency": "abs",
    "gradcam": "positive",
    "occlusion": "positive",
}


@dataclass
class Attribution:
    """A map over the input's spatial axes (channels summed) and, for integrated gradients, the
    completeness check: ``delta`` = sum(attributions) - (f(x) - f(baseline)), on the target logit.
    For GradCAM, ``layer`` is the stage it read and ``map_shape`` that stage's spatial shape."""

    method: str
    signed: np.ndarray
    delta: float | None = None
    score_gap: float | None = None
    internal_batch_size: int | None = None
    layer: str | None = None
    map_shape: tuple[int, ...] | None = None

    @property
    def importance(self) -> np.ndarray:
        return importance(self.signed, self.method)

    @property
    def relative_delta(self) -> float | None:
        if self.delta is None or not self.score_gap:
            return None
        return abs(self.delta) / abs(self.score_gap)


def importance(signed: np.ndarray, method: str) -> np.ndarray:
    """Non-negative importance: |map| for gradient methods, the positive part for GradCAM and occlusion.

    >>> importance(np.array([-2.0, 1.0]), "saliency").tolist(), importance(np.array([-2.0, 1.0]), "gradcam").tolist()
    ([2.0, 1.0], [0.0, 1.0])
    """
    return np.abs(signed) if SIGNED_TO_IMPORTANCE.get(method, "abs") == "abs" else np.clip(signed, 0, None)


def activation_bytes_per_sample(model: nn.Module, input_shape: tuple[int, ...], in_channels: int) -> int:
    """Bytes of every module output for one input (run on the meta device: no memory, no compute).
    Backward roughly doubles it; :func:`auto_internal_batch_size` accounts for that."""
    total = 0

    def hook(module: nn.Module, args: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor) and not list(module.children()):
            total += output.numel() * 4

    probe = meta_copy(model)
    handles = [m.register_forward_hook(hook) for m in probe.modules()]
    with torch.no_grad():
        probe(torch.empty((1, in_channels, *input_shape), device="meta"))
    for handle in handles:
        handle.remove()
    return total


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:  # MemAvailable counts reclaimable cache, unlike free pages
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_internal_batch_size(
    model: nn.Module, input_shape: tuple[int, ...], in_channels: int, n_steps: int, budget_bytes: int
) -> int:
    """How many interpolation steps integrated gradients may run at once within ``budget_bytes``
    (activations kept for backward plus their gradients: about 3x the forward outputs)."""
    per_sample = 3 * activation_bytes_per_sample(model, input_shape, in_channels)
    return int(max(1, min(n_steps, budget_bytes // max(1, per_sample))))


def make_baseline(x: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """Zeros, or the input blurred by a Gaussian of ``sigma`` voxels (MONAI ``GaussianSmooth``)."""
    if kind == "zeros":
        return torch.zeros_like(x)
    return GaussianSmooth(sigma=sigma)(x[0]).unsqueeze(0).to(x.dtype)


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    method: str,
    cfg: AttributionConfig = AttributionConfig(),
    layer: nn.Module | None = None,
) -> Attribution:
    """Attribute ``model(x)[0, target]`` (a logit) to the input voxels with ``method``. ``model`` must be
    in eval mode; GradCAM reads ``layer`` when given, else the stage :func:`gradcam_layer` picks."""
    if x.dim() not in (4, 5) or x.shape[0] != 1:
        raise UserInputError(f"expected one 2D (1, C, H, W) or 3D (1, C, D, H, W) input, got {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    x = x.detach().clone().requires_grad_(True)
    if method == "integrated_gradients":
        baseline = make_baseline(x.detach(), cfg.ig_baseline, cfg.blur_sigma)
        budget = int(cfg.memory_budget_mb * 2**20) if cfg.memory_budget_mb else free_memory_bytes(x.device) // 2
        batch = auto_internal_batch_size(model, spatial, x.shape[1], cfg.ig_steps, budget)
        attributions, delta = IntegratedGradients(model).attribute(
            x,
            baselines=baseline,
            target=target,
            n_steps=cfg.ig_steps,
            internal_batch_size=batch,
            return_convergence_delta=True,
        )
        with torch.no_grad():
            gap = float(model(x.detach())[0, target] - model(baseline)[0, target])
        return Attribution(method, _to_map(attributions), float(delta.sum()), gap, batch)
    if method == "saliency":
        return Attribution(method, _to_map(Saliency(model).attribute(x, target=target, abs=False)))
    if method == "gradcam":
        if layer is None:
            name: str | None = gradcam_layer(model, spatial, x.shape[1]).name
            layer = model.get_submodule(str(name))
        else:
            name = next((n for n, m in model.named_modules() if m is layer), None)
        cam = LayerGradCam(model, layer).attribute(x, target=target)
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        upsampled = _to_map(LayerAttribution.interpolate(cam, spatial, interpolate_mode=mode))
        return Attribution(method, upsampled, layer=name, map_shape=tuple(cam.shape[2:]))
    if method == "occlusion":
        window = (x.shape[1], *(min(cfg.occlusion_window, s) for s in spatial))
        strides = (x.shape[1], *(min(cfg.occlusion_stride, s) for s in spatial))
        with torch.no_grad():
            attributions = Occlusion(model).attribute(
                x,
                sliding_window_shapes=window,
                strides=strides,
                baselines=0.0,
                target=target,
                perturbations_per_eval=cfg.perturbations_per_eval,
            )
        return Attribution(method, _to_map(attributions))
    raise UserInputError(f"unknown attribution method {method!r}")


def _to_map(attributions: torch.Tensor) -> np.ndarray:
    return attributions.detach().float().sum(dim=1)[0].cpu().numpy()


#: An explainer as the sanity checks see it: (model, input, target) -> importance map.
Explainer = Callable[[nn.Module, torch.Tensor, int], np.ndarray]


def method_explainer(method: str, cfg: AttributionConfig = AttributionConfig()) -> Explainer:
    """The importance map of ``method`` as an :data:`Explainer`."""
    return lambda model, x, target: attribute(model, x, target, method, cfg).importance
