"""Groups ``preprocess`` and ``training``: cached model inputs and the fine-tuned ResNet-50.

Both assets are partitioned by model kind (``2d``, ``3d``): the demo trains a 2D model on the
BreastMNIST ultrasound images and a 3D model on the AdrenalMNIST3D volumes.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

from typing import TYPE_CHECKING, Any, TypeAlias

import dagster as dg

from assets.common import IO_RETRY, OWNER, markdown_image, user_errors_are_final
from assets.config import config_class, settings_from
from assets.resources import ScanLensProject
from pipeline.layout import ModelFiles
from pipeline.preprocess import AugmentConfig, PreprocessSettings, preprocess_catalog
from pipeline.settings import MODEL_KINDS, dims_of
from pipeline.train import TrainConfig, TrainResult, train

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
        doc="Model inputs, optimisation and augmentation of one training.",
    )


def training_settings(config: dg.Config) -> tuple[PreprocessSettings, TrainConfig, AugmentConfig]:
    """The three settings groups of a :data:`TrainedModelConfig`."""
    return (
        settings_from(config, PreprocessSettings),
        settings_from(config, TrainConfig),
        settings_from(config, AugmentConfig),
    )


@dg.asset(
    group_name="preprocess",
    owners=[OWNER],
    kinds={"monai", "numpy"},
    deps=["scan_catalog"],
    partitions_def=MODEL_KIND_PARTITIONS,
    retry_policy=IO_RETRY,
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


def training_metadata(result: TrainResult) -> dict[str, Any]:
    """What the UI shows of one training: the selection metric, the learning curves, the model card."""
    card = result.card
    validation = card["validation"]
    table = "| epoch | train loss | val loss | val AUROC |\n| --- | --- | --- | --- |\n" + "\n".join(
        f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_auroc']:.4f} |" for h in result.history
    )
    curves = ModelFiles(result.model_dir).curves
    image = "\n\n" + markdown_image(curves, "learning curves") if curves.exists() else ""
    return {
        "model_id": card["model_id"],
        "selection_metric": validation["selection_metric"],
        "best_value": validation["best_value"],
        "best_val_auroc": validation["best_auroc"],
        "epochs_run": validation["epochs_run"],
        "weights_source": card["weights_source"]["description"],
        "device": card["device"],
        "learning_curves": dg.MetadataValue.md(table + image),
        "history": dg.MetadataValue.json(result.history),
        "model_card": dg.MetadataValue.json(card),
        "model_dir": dg.MetadataValue.path(str(result.model_dir)),
    }


@dg.asset(
    group_name="training",
    owners=[OWNER],
    kinds={"pytorch", "monai"},
    deps=[preprocessed_scans],
    partitions_def=MODEL_KIND_PARTITIONS,
    pool="gpu",
    tags={"resource": "gpu"},
)
def trained_model(
    context: dg.AssetExecutionContext, config: TrainedModelConfig, project: ScanLensProject
) -> dg.MaterializeResult:
    """A ResNet-50 fine-tuned on the labelled scans (2D, or 3D inflated from 2D, I3D-style), with
    its model card. Runs in the ``gpu`` pool, so two GPU trainings never share a card."""
    with user_errors_are_final():
        pre, cfg, aug = training_settings(config)
        result = train(
            project.workdir_path, cfg, pre.for_dims(dims_of(context.partition_key)), aug, resume=True, log=context.log
        )
    return dg.MaterializeResult(metadata=training_metadata(result))
