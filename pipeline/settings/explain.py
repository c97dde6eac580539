"""The ``explain`` settings group: which cases are explained (:class:`ExplainSettings`) and by which
attribution methods with which parameters (:class:`AttributionConfig`)."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting

METHODS = ("integrated_gradients", "saliency", "gradcam", "occlusion")


@dataclass(frozen=True, config=SETTINGS)
class AttributionConfig:
    """Settings of the attribution methods (part of the ``explain`` settings group). Sizes are in
    model-input voxels."""

    methods: tuple[str, ...] = setting(METHODS, "attribution methods: " + ", ".join(METHODS))
    ig_steps: int = setting(32, "integrated-gradients steps")
    ig_baseline: Literal["zeros", "blur"] = setting("zeros", "integrated-gradients baseline: zeros or a blurred input")
    blur_sigma: float = setting(4.0, "Gaussian sigma of the blurred baseline, in voxels")
    memory_budget_mb: float | None = setting(
        None,
        "memory integrated gradients may use for its interpolation batches (none: half of what is free now, "
        "on the model's device)",
        flag="--memory-mb",
        metavar="MB",
    )
    occlusion_window: int = setting(8, "occlusion window edge in input voxels")
    occlusion_stride: int = setting(4, "occlusion stride in input voxels")
    perturbations_per_eval: int = setting(16, "occluded inputs per forward pass")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise UserInputError(
                f"unknown attribution method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
            )
        if self.ig_baseline not in ("zeros", "blur"):
            raise UserInputError("the integrated-gradients baseline must be 'zeros' or 'blur'")
        if (
            self.ig_steps < 2
            or self.occlusion_window < 1
            or self.occlusion_stride < 1
            or self.perturbations_per_eval < 1
        ):
            raise UserInputError("ig_steps must be >= 2; occlusion window, stride and perturbations_per_eval >= 1")


@dataclass(frozen=True, config=SETTINGS)
class ExplainSettings:
    """Which cases are explained and how they are checked (the ``explain`` settings group; the
    methods' own settings are :class:`AttributionConfig`)."""

    source: Literal["auto", "test", "oof"] = setting(
        "auto", "cases from the held-out test set (auto: when there is one) or out-of-fold"
    )
    per_kind: int = setting(2, "cases of each of TP, TN, FP, FN")
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    sanity_threshold: float = setting(
        0.5, "a method fails when maps of the fully randomised model keep Spearman rho >= this"
    )
    sanity_cases: int = setting(4, "cases the sanity checks run on")
    deletion_steps: int = setting(20, "steps of the deletion (faithfulness) curve")
    seed: int = setting(0, "random seed of the randomisation check and the random deletion baseline")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto (CUDA when available), cpu or cuda")

    def __post_init__(self) -> None:
        if self.source not in ("auto", "test", "oof"):
            raise UserInputError("source must be auto, test or oof")
        if self.per_kind < 1 or self.sanity_cases < 1:
            raise UserInputError("per_kind and sanity_cases must be at least 1")
