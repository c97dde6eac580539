"""The 3D path of `explain`: montages through the attribution peak and NIfTI maps on the scan grid."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.explain.attribution import AttributionConfig
from pipeline.explain.run import ExplainSettings, explain
from pipeline.layout import Workdir
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig, preprocess_catalog
from pipeline.train.checkpoint import save_checkpoint


def _fake_evaluation(workdir: Path, pre: PreprocessConfig) -> None:
    """One random-init 3D model with a card, as fold 0 of a 1-fold evaluation whose OOF predictions
    are made up (the selection logic does not care where they came from)."""
    torch.manual_seed(0)
    model = build_classifier(2, pre).network
    model_dir = workdir / "models" / "resnet50-3d-test"
    model_dir.mkdir(parents=True)
    save_checkpoint(model_dir / "weights.pt", model.state_dict())
    card = {"model_id": "resnet50-3d-test", "class_names": ["0", "1"], "preprocessing": {"config": asdict(pre)},
            "hyperparameters": {"inflation": "average", "depth_kernel": 3}}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    Workdir(workdir).fold(0).root.mkdir(parents=True)
    Workdir(workdir).fold(0).record.write_text(json.dumps({"model_id": "resnet50-3d-test"}))
    catalog = pd.read_parquet(workdir / "catalog.parquet")
    scans = catalog[catalog["dims"] == 3]
    rng = np.random.default_rng(0)
    oof = pd.DataFrame({"scan_id": scans["scan_id"], "patient_id": scans["patient_id"], "fold": 0,
                        "label": scans["label"].astype(int), "prob_0": 0.0})
    oof["prob_1"] = rng.random(len(oof))
    oof["prob_0"] = 1 - oof["prob_1"]
    oof.to_parquet(workdir / "evaluation" / "oof_predictions.parquet")
    metrics = {"task": "binary", "classes": ["0", "1"], "settings": {"n_folds": 1},
               "operating_point": {"threshold": 0.5, "rule": "youden"}}
    (workdir / "evaluation" / "metrics.json").write_text(json.dumps(metrics))


def test_3d_cases_get_montages_and_nifti_maps_on_the_scan_grid(tiny_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir, workdir, ignore=shutil.ignore_patterns("evaluation", "models", "saliency"))
    pre = PreprocessConfig(dims=3, input_size=(16, 16, 16))  # maps go back to the 28-voxel scan grid
    preprocess_catalog(workdir, pre)
    _fake_evaluation(workdir, pre)
    settings = ExplainSettings(source="oof", per_kind=1, sanity_cases=1, attribution=AttributionConfig(
        methods=("gradcam", "integrated_gradients"), ig_steps=4, memory_budget_mb=500))
    result = explain(workdir, settings)
    catalog = pd.read_parquet(workdir / "catalog.parquet").set_index("scan_id")
    for case in result.cases.itertuples(index=False):
        volume = nib.load(str(workdir / catalog.loc[case.scan_id, "volume_path"]))
        for method, rel in json.loads(case.files).items():
            png = workdir / rel
            width, height = Image.open(png).size
            assert width > 2.5 * height  # axial, coronal and sagittal panels side by side
            nifti = nib.load(str(png.with_suffix(".nii")))
            assert nifti.shape == volume.shape and np.allclose(nifti.affine, volume.affine)
            values = np.asarray(nifti.dataobj)
            assert np.isfinite(values).all() and (values >= 0).all()
            if method == "integrated_gradients":  # |IG| is non-zero wherever the input is (GradCAM may be all 0)
                assert values.max() > 0
            assert bytes(nifti.header["descrip"]).rstrip(b"\0") == b"scanlens attribution"
    assert set(result.sanity["methods"]) == {"gradcam", "integrated_gradients"}
