"""Groups ``preprocess`` and ``training``: cached model inputs and the fine-tuned ResNet-50.

Both assets are partitioned by model kind (``2d``, ``3d``): the demo trains a 2D model on the
BreastMNIST ultrasound images and a 3D model on the AdrenalMNIST3D volumes.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

from typing import TYPE_CHECKING, TypeAlias

import dagster as dg

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.config import config_class, settings_from
from assets.deployment import PREPROCESS, cpu_step_tags, gpu_step_tags
from assets.launcher import TrainingLauncher, TrainingRequest
from assets.resources import ScanLensProject
from pipeline.preprocess import AugmentConfig, PreprocessSettings, preprocess_catalog
from pipeline.settings import MODEL_KINDS, dims_of
from pipeline.settings.distributed import DistributedSettings
from pipeline.train import TrainConfig

MODEL_KIND_PARTITIONS = dg.StaticPartitionsDefinition(list(MODEL_KINDS))

if TYPE_CHECKING:  # the classes are made at import time; to a type checker they are Dagster configs
    ModelInputConfig: TypeAlias = dg.Config
    TrainedModelConfig: TypeAlias = dg.Config
else:
    ModelInputConfig = config_class(
        "ModelInputConfig", PreprocessSettings, doc="How scans become model inputs (the model kind is the partition)."
    )
    TrainedModelConfig = config_class(
        "TrainedModelConfig",
        PreprocessSettings,
        TrainConfig,
        AugmentConfig,
        DistributedSettings,
        doc="Model inputs, optimisation, augmentation and training processes of one training.",
    )


def training_settings(config: dg.Config) -> tuple[PreprocessSettings, TrainConfig, AugmentConfig]:
    """The three settings groups of a :data:`TrainedModelConfig`."""
    return (
        settings_from(config, PreprocessSettings),
        settings_from(config, TrainConfig),
        settings_from(config, AugmentConfig),
    )


def training_request(config: dg.Config, project: ScanLensProject, kind: str) -> TrainingRequest:
    """What a :data:`TrainedModelConfig` asks to train, in the project's work folder, for model kind ``kind``."""
    pre, cfg, aug = training_settings(config)
    dist = settings_from(config, DistributedSettings)
    return TrainingRequest(project.workdir_path, kind, pre, cfg, aug, dist, project.lock_timeout_s)


@dg.asset(
    group_name="preprocess",
    owners=[OWNER],
    kinds={"monai", "numpy"},
    deps=["scan_catalog"],
    partitions_def=MODEL_KIND_PARTITIONS,
    retry_policy=IO_RETRY,
    op_tags=cpu_step_tags(PREPROCESS),
)
def preprocessed_scans(
    context: dg.AssetExecutionContext, config: ModelInputConfig, project: ScanLensProject
) -> dg.MaterializeResult:
    """Model inputs made with MONAI (orientation RAS, optional spacing, intensity by modality, 2D view,
    resize and pad) and cached by content hash x the parameters that apply to each scan."""
    with user_errors_are_final():
        pre = settings_from(config, PreprocessSettings).for_dims(dims_of(context.partition_key))
        result = preprocess_catalog(project.workdir_path, pre)
    return dg.MaterializeResult(
        metadata={
            "scans": len(result.index),
            "computed": result.n_computed,
            "from_cache": result.n_cached,
            "config_hash": result.config_hash[:16],
            "index": dg.MetadataValue.path(str(result.index_path)),
            "by_split": dg.MetadataValue.json(result.index.groupby("split").size().to_dict()),
        }
    )


@dg.asset(
    group_name="training",
    owners=[OWNER],
    kinds={"pytorch", "monai"},
    deps=[preprocessed_scans],
    partitions_def=MODEL_KIND_PARTITIONS,
    pool="gpu",
    tags={"resource": "gpu"},
    op_tags=gpu_step_tags(),
)
def trained_model(
    context: dg.AssetExecutionContext, config: TrainedModelConfig, project: ScanLensProject, launcher: TrainingLauncher
) -> dg.MaterializeResult:
    """A ResNet-50 fine-tuned on the labelled scans (2D, or 3D inflated from 2D, I3D-style), with
    its model card. Runs in the ``gpu`` pool, so two GPU trainings never share a card; trains where the
    ``launcher`` resource says (a child process by default, reporting each epoch through Dagster Pipes),
    resuming from the model's checkpoint."""
    with user_errors_are_final():
        return launcher.train_model(context, training_request(config, project, context.partition_key))
