"""MONAI preprocessing: typed config, deterministic transforms cached on disk, random augmentation."""

from __future__ import annotations

from pipeline.preprocess.augment import AugmentConfig, build_augmentation
from pipeline.preprocess.cache import PreprocessResult, preprocess_catalog
from pipeline.preprocess.config import PreprocessConfig
from pipeline.settings.preprocess import PreprocessSettings

__all__ = [
    "AugmentConfig",
    "PreprocessConfig",
    "PreprocessResult",
    "PreprocessSettings",
    "build_augmentation",
    "preprocess_catalog",
]
