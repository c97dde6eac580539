"""The ``score`` settings group: what scoring writes besides the scores themselves."""

from __future__ import annotations

from typing import Literal

from pydantic.dataclasses import dataclass

from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class ScoreSettings:
    """``overlays``: a GradCAM overlay PNG per scored scan (and, with DICOM outputs, a Secondary
    Capture of it); ``device`` runs the champion's models."""

    overlays: bool = setting(True, "GradCAM overlay per scan (PNG, and a Secondary Capture with DICOM outputs)")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto (CUDA when available), cpu or cuda")
