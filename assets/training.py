"""Groups ``preprocess`` and ``training``: cached model inputs and the fine-tuned ResNet-50.

Both assets are partitioned by model kind (``2d``, ``3d``): the demo trains a 2D model on the
BreastMNIST ultrasound images and a 3D model on the AdrenalMNIST3D volumes.
"""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

import base64
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.resources import ScanLensProject
from pipeline.preprocess import AugmentConfig, PreprocessConfig, preprocess_catalog
from pipeline.train import TrainConfig, train

MODEL_KINDS = dg.StaticPartitionsDefinition(["2d", "3d"])


class ModelInputConfig(dg.Config):
    input_size: int = Field(default=32, description="model input edge in voxels (H=W, or D=H=W for 3D)")
    intensity: str = Field(default="auto", description="auto, ct_window, percentile or minmax")
    ct_window: str = Field(default="soft_tissue", description="soft_tissue, lung, bone or 'centre,width' in HU")
    slice_strategy: str = Field(default="centre", description="how a 2D model reads 3D scans: centre, mip or 2.5d")
    target_spacing_mm: Optional[float] = Field(default=None, description="isotropic resampling in mm; null keeps the grid")

    def preprocess_config(self, kind: str) -> PreprocessConfig:
        dims = 2 if kind == "2d" else 3
        spacing = (self.target_spacing_mm,) * 3 if self.target_spacing_mm else None
        return PreprocessConfig(dims=dims, input_size=(self.input_size,) * dims, target_spacing_mm=spacing,
                                intensity=self.intensity, ct_window=self.ct_window, slice_strategy=self.slice_strategy)


@dg.asset(group_name="preprocess", owners=[OWNER], kinds={"monai", "numpy"}, deps=["scan_catalog"],
          partitions_def=MODEL_KINDS, retry_policy=IO_RETRY)
def preprocessed_scans(context: dg.AssetExecutionContext, config: ModelInputConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Model inputs made with MONAI (orientation RAS, optional spacing, intensity by modality, 2D view,
    resize and pad) and cached by content hash x the parameters that apply to each scan."""
    with user_errors_are_final():
        result = preprocess_catalog(project.workdir_path, config.preprocess_config(context.partition_key))
    return dg.MaterializeResult(metadata={
        "scans": len(result.index), "computed": result.n_computed, "from_cache": result.n_cached,
        "config_hash": result.config_hash[:16], "index": dg.MetadataValue.path(str(result.index_path)),
        "by_split": dg.MetadataValue.json(result.index.groupby("split").size().to_dict()),
    })


class TrainedModelConfig(ModelInputConfig):
    epochs: int = Field(default=3, description="passes over the training split (demo profile: 3)")
    batch_size: int = Field(default=16, description="images or volumes per batch (3D at 32^3 needs >= 2)")
    lr: float = Field(default=1e-3, description="head learning rate; the backbone uses lr x 0.1")
    weights: str = Field(default="imagenet", description="'imagenet' (torch hub cache), a .pth path, or '' for random init")
    device: str = Field(default="auto", description="auto, cpu or cuda")
    seed: int = 0
    head_only_epochs: int = 0
    patience: int = 5
    augment: bool = True


@dg.asset(group_name="training", owners=[OWNER], kinds={"pytorch", "monai"}, deps=[preprocessed_scans],
          partitions_def=MODEL_KINDS, pool="gpu", tags={"resource": "gpu"})
def trained_model(context: dg.AssetExecutionContext, config: TrainedModelConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """A ResNet-50 fine-tuned on the labelled scans (2D, or 3D inflated from 2D, I3D-style), with
    its model card. Runs in the ``gpu`` pool, so two GPU trainings never share a card."""
    cfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weights=config.weights or None,
                      device=config.device, seed=config.seed, head_only_epochs=config.head_only_epochs,
                      patience=config.patience)
    with user_errors_are_final():
        result = train(project.workdir_path, cfg, config.preprocess_config(context.partition_key),
                       AugmentConfig(enabled=config.augment), resume=True, log=context.log)
    card = result.card
    curves = result.model_dir / "learning_curves.png"
    table = "| epoch | train loss | val loss | val AUROC |\n| --- | --- | --- | --- |\n" + "\n".join(
        f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_auroc']:.4f} |" for h in result.history
    )
    image = f"\n\n![learning curves](data:image/png;base64,{base64.b64encode(curves.read_bytes()).decode()})" if curves.exists() else ""
    return dg.MaterializeResult(metadata={
        "model_id": card["model_id"],
        "best_val_auroc": card["validation"]["best_auroc"],
        "epochs_run": card["validation"]["epochs_run"],
        "weights_source": card["weights_source"]["description"],
        "device": card["device"],
        "learning_curves": dg.MetadataValue.md(table + image),
        "history": dg.MetadataValue.json(result.history),
        "model_card": dg.MetadataValue.json(card),
        "model_dir": dg.MetadataValue.path(str(result.model_dir)),
    })
