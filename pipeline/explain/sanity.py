"""Can the maps be trusted? Model-parameter randomisation, deletion curves, IG completeness.

* **Cascading randomisation** (Adebayo et al. 2018): re-initialise the network from the top
  (``fc``, then ``layer4`` ... down to the stem) and compare each stage's importance map with the
  trained model's by Spearman rank correlation. A method whose maps stay similar after the whole
  network is random (correlation above ``threshold``) explains the input, not the model: it
  **fails** the sanity check.
* **Deletion curve**: remove the most important voxels first (set them to the baseline) in
  ``steps`` equal fractions and follow the target class's probability; the area under that curve
  (lower = more faithful) is compared with removing voxels in random order.
* **IG completeness**: Captum's convergence delta relative to f(x) - f(baseline).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from pipeline.explain.attribution import Explainer

log = logging.getLogger(__name__)
CASCADE = ("fc", "layer4", "layer3", "layer2", "layer1", "stem")


def _reinitialise(module: nn.Module, generator_seed: int) -> None:
    torch.manual_seed(generator_seed)
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.reset_running_stats()


def cascade_stages(model: nn.Module, seed: int = 0) -> list[tuple[str, nn.Module]]:
    """Copies of ``model`` with the top 1, 2, ... blocks of :data:`CASCADE` re-initialised (eval mode)."""
    stages = []
    randomised = copy.deepcopy(model)
    for depth, name in enumerate(CASCADE):
        blocks = [getattr(randomised, n) for n in ("conv1", "bn1")] if name == "stem" else [getattr(randomised, name)]
        for block in blocks:
            _reinitialise(block, seed * 100 + depth)
        stages.append((name, copy.deepcopy(randomised).eval()))
    return stages


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (0 when either is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomisation_check(
    explainer: Explainer, model: nn.Module, cases: list[tuple[torch.Tensor, int]], threshold: float = 0.5, seed: int = 0
) -> dict[str, Any]:
    """Mean Spearman correlation (over ``cases``) between the trained model's maps and each cascade
    stage's; ``passed`` when the fully randomised model's maps correlate below ``threshold``."""
    stages = cascade_stages(model, seed)
    reference = [explainer(model, x, target) for x, target in cases]
    per_stage: list[dict[str, Any]] = []
    for name, randomised in stages:
        values = [
            spearman(ref, explainer(randomised, x, target)) for ref, (x, target) in zip(reference, cases, strict=True)
        ]
        per_stage.append({"randomised_down_to": name, "spearman": float(np.mean(values))})
    final = per_stage[-1]["spearman"]
    return {"stages": per_stage, "final_spearman": final, "threshold": threshold, "passed": bool(final < threshold)}


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    importance: np.ndarray,
    steps: int = 20,
    random_orders: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC of the target probability as the most important voxels are zeroed (all channels), against
    the mean AUC of ``random_orders`` random orders. ``ratio`` < 1 means the map beats chance."""
    flat = importance.ravel()
    order = np.argsort(-flat, kind="stable")
    rng = np.random.default_rng(seed)
    curve = _deletion_scores(model, x, target, order, steps)
    random_curves = [
        _deletion_scores(model, x, target, rng.permutation(flat.size), steps) for _ in range(random_orders)
    ]
    fractions = np.linspace(0, 1, steps + 1)
    auc = float(np.trapezoid(curve, fractions))
    random_auc = float(np.mean([np.trapezoid(c, fractions) for c in random_curves]))
    return {
        "auc": auc,
        "random_auc": random_auc,
        "ratio": auc / random_auc if random_auc > 0 else None,
        "curve": curve.tolist(),
    }


def _deletion_scores(model: nn.Module, x: torch.Tensor, target: int, order: np.ndarray, steps: int) -> np.ndarray:
    spatial = x.shape[2:]
    n = order.size
    batch = []
    for k in range(steps + 1):
        mask = torch.ones(n, dtype=x.dtype, device=x.device)
        mask[torch.as_tensor(order[: round(k / steps * n)], device=x.device)] = 0
        batch.append(x[0] * mask.reshape(spatial))
    scores = []
    with torch.no_grad():
        for chunk in torch.stack(batch).split(8):
            scores.append(torch.softmax(model(chunk).float(), dim=1)[:, target].cpu())
    return torch.cat(scores).numpy()
