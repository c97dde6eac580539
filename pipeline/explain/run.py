"""``scanlens explain``: saliency maps for selected cases, and ``W/saliency/sanity.json``.

Cases come from the held-out test set (explained by the fold-model ensemble: each method's map is
the mean of the fold models' maps) or from the out-of-fold predictions (each case by the fold model
that scored it). The predicted class's logit is explained. Per case and method:
``W/saliency/<kind>_<k>_<scan_id>/<method>.png`` (2D overlay, or a 3D montage through the
attribution peak) and, for 3D scans, ``<method>.nii`` on the ingested scan's grid. The sanity
checks run on one reference model (fold 0, or the first case's fold) over the first
``sanity_cases`` cases. ``sanity.json`` records GradCAM's target layer and map size
(``gradcam_layer``: :func:`~pipeline.explain.gradcam.gradcam_layer`). Re-running with unchanged
inputs recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.errors import UserInputError
from pipeline.evaluate.classes import binary_target
from pipeline.explain.attribution import (
    attribute,
    importance,
    method_explainer,
)
from pipeline.explain.cases import select_cases
from pipeline.explain.gradcam import gradcam_layer
from pipeline.explain.render import ScanOverlay
from pipeline.explain.sanity import deletion_curve, randomisation_check
from pipeline.explain.spatial import write_map_nifti
from pipeline.inference import LoadedModel, load_model
from pipeline.layout import Workdir
from pipeline.locking import writes_workdir
from pipeline.preprocess import preprocess_catalog
from pipeline.settings.explain import ExplainSettings
from pipeline.storage import write_bytes_if_changed, write_parquet_if_changed

log = logging.getLogger(__name__)


@dataclass
class ExplainResult:
    folder: Path
    cases: pd.DataFrame
    sanity: dict[str, Any]
    computed: bool


def _models(workdir: Path, n_folds: int, device: str) -> dict[int, LoadedModel]:
    models, wd = {}, Workdir(workdir)
    for k in range(n_folds):
        record = json.loads(wd.fold(k).record.read_text())
        models[k] = load_model(wd.model(record["model_id"]).root, device)
    return models


def _cases(workdir: Path, settings: ExplainSettings, metrics: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    wd = Workdir(workdir)
    use_test = settings.source == "test" or (settings.source == "auto" and wd.test_predictions.exists())
    if use_test and not wd.test_predictions.exists():
        raise UserInputError("no held-out test predictions: use source oof")
    frame = pd.read_parquet(wd.test_predictions if use_test else wd.oof_predictions)
    y, p = binary_target(frame, metrics["classes"])
    frame = frame.assign(p=p, label=y)
    if not use_test:
        frame = frame.rename(columns={"fold": "model_fold"})
    cases = select_cases(frame, metrics["operating_point"]["threshold"], settings.per_kind)
    return cases, "test" if use_test else "oof"


@writes_workdir("explain")
def explain(workdir: Path, settings: ExplainSettings = ExplainSettings()) -> ExplainResult:
    """Attribute, map back, render and sanity-check; see the module docstring for the files."""
    wd = Workdir(workdir)
    metrics_path = wd.metrics
    if not metrics_path.exists():
        raise UserInputError(f"no evaluation in {workdir}: run `scanlens evaluate` (or cv_evaluation) first")
    metrics = json.loads(metrics_path.read_text())
    if metrics["task"] != "binary":
        raise UserInputError("saliency case selection (TP/TN/FP/FN) needs a binary task")
    cases, source = _cases(workdir, settings, metrics)
    if cases.empty:
        raise UserInputError("no cases to explain")
    models = _models(workdir, metrics["settings"]["n_folds"], settings.device)
    reference = next(iter(models.values()))
    pre = reference.preprocess
    cfg = settings.attribution
    layer = gradcam_layer(reference.model, pre.input_size, pre.in_channels) if "gradcam" in cfg.methods else None
    key = hashlib.sha256(
        json.dumps(
            [
                asdict(settings),
                cases[["scan_id", "kind"]].values.tolist(),
                sorted(m.model_id for m in models.values()),
                metrics["operating_point"],
                layer.to_dict() if layer else None,
            ],
            default=str,
        ).encode()
    ).hexdigest()
    folder = wd.saliency
    done = wd.sanity
    if done.exists() and json.loads(done.read_text()).get("inputs_hash") == key and wd.saliency_cases.exists():
        log.info("saliency maps and sanity checks are up to date")
        return ExplainResult(folder, pd.read_parquet(wd.saliency_cases), json.loads(done.read_text()), False)

    catalog = pd.read_parquet(wd.catalog).set_index("scan_id")
    rows = catalog.loc[cases["scan_id"]].reset_index()
    index = preprocess_catalog(workdir, pre, scans=rows).index.set_index("scan_id")
    records, inputs = [], []
    deltas: dict[str, list[float]] = {m: [] for m in cfg.methods}
    timings = {m: 0.0 for m in cfg.methods}
    for number, case in enumerate(cases.itertuples(index=False)):
        members = list(models.values()) if source == "test" else [models[int(case.model_fold)]]
        x = torch.from_numpy(np.load(workdir / index.loc[case.scan_id, "cache_path"]))[None]
        predicted = int(case.p >= metrics["operating_point"]["threshold"])
        target = members[0].classes.index(int(metrics["classes"][predicted]))
        inputs.append((x, target, members[0]))
        scan = catalog.loc[case.scan_id]
        overlay = ScanOverlay.load(workdir / scan["volume_path"], pre.effective(scan["modality"], int(scan["dims"])))
        case_dir = wd.saliency_case(case.kind, number, case.scan_id)
        files = {}
        for method in cfg.methods:
            started = time.perf_counter()
            maps = [attribute(m.model, x.to(m.device.device), target, method, cfg) for m in members]
            timings[method] += time.perf_counter() - started
            signed = np.mean([a.signed for a in maps], axis=0)
            deltas[method] += [a.relative_delta for a in maps if a.relative_delta is not None]
            shown = f"{method} on {layer.describe()}" if method == "gradcam" and layer else method
            title = f"{case.kind}: p={case.p:.3f} (threshold {metrics['operating_point']['threshold']:.3f}), {shown}"
            png, on_scan, affine = overlay.render(importance(signed, method), title)
            write_bytes_if_changed(case_dir.overlay(method), png)
            files[method] = str(case_dir.overlay(method).relative_to(workdir))
            if 1 not in overlay.volume.shape:
                write_map_nifti(case_dir.volume_map(method), on_scan, affine)
        records.append(
            {
                "scan_id": case.scan_id,
                "patient_id": case.patient_id,
                "kind": case.kind,
                "label": int(case.label),
                "p": float(case.p),
                "predicted_class": metrics["classes"][predicted],
                "source": source,
                "models": ",".join(m.model_id for m in members),
                "files": json.dumps(files),
            }
        )
    sanity = _sanity(inputs[: settings.sanity_cases], settings, deltas, timings, len(cases))
    sanity.update(inputs_hash=key, source=source, reference_model=inputs[0][2].model_id)
    if layer is not None:
        sanity["gradcam_layer"] = layer.to_dict()
    table = pd.DataFrame(records)
    write_parquet_if_changed(wd.saliency_cases, table)
    write_bytes_if_changed(done, json.dumps(sanity, indent=2).encode())
    return ExplainResult(folder, table, sanity, True)


def _sanity(
    inputs: list[tuple[torch.Tensor, int, LoadedModel]],
    settings: ExplainSettings,
    deltas: dict[str, list[float]],
    timings: dict[str, float],
    n_cases: int,
) -> dict[str, Any]:
    """Randomisation and deletion per method on one reference model, plus IG completeness."""
    model = inputs[0][2]
    cases = [(x.to(model.device.device), target) for x, target, m in inputs if m.model_id == model.model_id]
    out: dict[str, Any] = {"methods": {}, "threshold": settings.sanity_threshold, "n_sanity_cases": len(cases)}
    for method in settings.attribution.methods:
        explainer = method_explainer(method, settings.attribution)
        check = randomisation_check(explainer, model.model, cases, settings.sanity_threshold, settings.seed)
        deletion = [
            deletion_curve(model.model, x, t, explainer(model.model, x, t), settings.deletion_steps, seed=settings.seed)
            for x, t in cases
        ]
        entry = {
            "randomisation": check,
            "passed": check["passed"],
            "verdict": "passes sanity check" if check["passed"] else "fails sanity check",
            "deletion_auc": float(np.mean([d["auc"] for d in deletion])),
            "deletion_random_auc": float(np.mean([d["random_auc"] for d in deletion])),
            "seconds_per_case": timings[method] / max(1, n_cases),
        }
        entry["deletion_ratio"] = (
            entry["deletion_auc"] / entry["deletion_random_auc"] if entry["deletion_random_auc"] else None
        )
        if deltas.get(method):
            entry["ig_relative_delta_median"] = float(np.median(deltas[method]))
            entry["ig_relative_delta_max"] = float(np.max(deltas[method]))
        out["methods"][method] = entry
        log.info(
            "sanity %s: final Spearman %.3f (%s), deletion AUC %.3f vs random %.3f",
            method,
            check["final_spearman"],
            entry["verdict"],
            entry["deletion_auc"],
            entry["deletion_random_auc"],
        )
    out["all_passed"] = all(e["passed"] for e in out["methods"].values())
    return out
