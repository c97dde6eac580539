"""Benchmark: the MedMNIST v2 protocol, with ScanLens' training defaults.

For each dataset given (a MedMNIST ``.npz``) and each input size, as the paper does (Yang et al.,
"MedMNIST v2", Scientific Data 10:41, 2023): train one ResNet-50 on the ``train`` split, select the
epoch on ``val`` (best validation AUROC: the trainer's early stopping keeps those weights), and report
AUROC and accuracy (arg-max decision) on ``test``. The data go through ScanLens end to end:
``import-medmnist`` (DICOM for 2D, NIfTI for 3D), ``ingest``, the preprocessing cache and
:func:`pipeline.train.train` with the declared defaults (``TrainConfig``, ``AugmentConfig``), from
random initialisation. Inputs are resized from MedMNIST's 28 px to the size given (64 px is
an upsampling of the 28 px release, as MedMNIST+ at 64 px would be finer: say so when comparing).

Each line prints our test AUROC and ACC next to the paper's ResNet-50 figure at the nearest
published size (28 or 224 px; 2D ResNet-50 (28)/(224), 3D ResNet-50+3D), and the ResNet-18 and
AutoML rows for context. On an NVIDIA GPU, 224 px (2D) is added to the sizes.

Usage:
  python benchmarks/medmnist_protocol.py [NPZ ...] [--sizes 28 64] [--set train.epochs=30 ...]
      [--limit N] [--out DIR]
  (default NPZ: ../shared/data/medmnist/breastmnist.npz, else data/demo/breastmnist.npz)

``--set group.field=value`` overrides one declared setting (groups: train, augment) for every run,
which is how docs/recipe.md's lever study was run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.inference import load_model, predict_probabilities
from pipeline.ingest import IngestConfig, ingest
from pipeline.io.medmnist import import_medmnist
from pipeline.preprocess import AugmentConfig, preprocess_catalog
from pipeline.settings.fields import build
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.profiles import profile_defaults
from pipeline.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = [
    ROOT.parent / "shared" / "data" / "medmnist" / "breastmnist.npz",
    ROOT / "data" / "demo" / "breastmnist.npz",
]

#: Test AUROC / ACC published in MedMNIST v2 (Yang et al. 2023, Tables 3 and 4), by dataset.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "breastmnist": {
        "ResNet-18 (28)": (0.901, 0.863),
        "ResNet-18 (224)": (0.891, 0.833),
        "ResNet-50 (28)": (0.857, 0.812),
        "ResNet-50 (224)": (0.866, 0.842),
        "auto-sklearn": (0.836, 0.803),
        "AutoKeras": (0.871, 0.831),
        "Google AutoML Vision": (0.919, 0.861),
    },
    "adrenalmnist3d": {
        "ResNet-18+2.5D": (0.772, 0.732),
        "ResNet-18+3D": (0.863, 0.827),
        "ResNet-18+ACS": (0.839, 0.754),
        "ResNet-50+2.5D": (0.732, 0.763),
        "ResNet-50+3D": (0.828, 0.745),
        "ResNet-50+ACS": (0.828, 0.758),
        "auto-sklearn": (0.828, 0.802),
        "AutoKeras": (0.804, 0.705),
    },
}
GROUPS = {"train": TrainConfig, "augment": AugmentConfig}


def paper_row(dataset: str, dims: int, size: int) -> str:
    """The paper's ResNet-50 row this run compares with (nearest published size)."""
    if dims == 3:
        return "ResNet-50+3D"
    return "ResNet-50 (224)" if size >= 128 else "ResNet-50 (28)"


def overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``["train.epochs=30", ...]`` -> ``{"train": {"epochs": 30}}`` (values parsed as JSON when they parse)."""
    out: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        group, _, name = key.partition(".")
        if group not in GROUPS or name not in {f.name for f in fields(GROUPS[group])}:
            raise SystemExit(f"medmnist_protocol: unknown setting {key!r} (groups: {', '.join(GROUPS)})")
        try:
            out[group][name] = json.loads(raw)
        except json.JSONDecodeError:
            out[group][name] = raw
    return out


def prepare(npz: Path, root: Path, limit: int | None) -> tuple[Path, int]:
    """Import and ingest ``npz`` once (kept work folders under ``--out`` are reused); the work folder and the dims."""
    kept = root / "dims.json"
    if kept.exists():
        return root / "w", int(json.loads(kept.read_text()))
    result = import_medmnist(npz, root / "src", fmt="dicom", limit=limit, seed=0)
    if result.dims == 3:  # one NIfTI per volume reads faster than 28 slices
        result = import_medmnist(npz, root / "src3", fmt="nifti", limit=limit, seed=0)
        source = root / "src3"
    else:
        source = root / "src"
    ingest(IngestConfig(source=source, workdir=root / "w", labels=result.labels_path, secret="medmnist-protocol"))
    kept.write_text(json.dumps(result.dims))
    return root / "w", result.dims


def _auroc(y: np.ndarray, probabilities: np.ndarray) -> float:
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(y, probabilities[:, 1]))
    return float(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))


def run_one(workdir: Path, dims: int, size: int, sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Train on train, select on val, score test; AUROC, ACC and seconds."""
    cfg = build(TrainConfig, {**profile_defaults(TrainConfig), "weights": None, **sets["train"]})
    aug = build(AugmentConfig, {**profile_defaults(AugmentConfig), **sets["augment"]})
    pre = PreprocessSettings(input_size=size).for_dims(dims)
    started = time.perf_counter()
    result = train(workdir, cfg, pre, aug)
    train_s = time.perf_counter() - started
    index = preprocess_catalog(workdir, pre).index
    test = index[index["split"] == "test"].reset_index(drop=True)
    loaded = load_model(result.model_dir)
    probabilities = predict_probabilities(loaded, workdir, test)
    y = test["label"].to_numpy()
    # the same weights with test-time flips on (or off, when the model was trained with them on)
    hyper = {**loaded.card["hyperparameters"], "tta_flips": not loaded.tta_flips}
    other = predict_probabilities(replace(loaded, card={**loaded.card, "hyperparameters": hyper}), workdir, test)
    auroc, other_auroc = _auroc(y, probabilities), _auroc(y, other)
    best = max(result.history, key=lambda r: r["val_auroc"] if np.isfinite(r["val_auroc"]) else -1.0)
    return {
        "auroc": float(auroc),
        "acc": float(accuracy_score(y, probabilities.argmax(1))),
        "tta_flips": loaded.tta_flips,
        "auroc_flipped_tta": other_auroc,
        "n_test": len(test),
        "epochs_run": len(result.history),
        "best_epoch": int(best["epoch"]),
        "best_val_auroc": float(best["val_auroc"]),
        "train_s": train_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("npz", nargs="*", type=Path, help="MedMNIST .npz files (default: BreastMNIST)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[28, 64], help="input edges in px/voxels")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="GROUP.FIELD=VALUE")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split (quick look)")
    parser.add_argument("--out", type=Path, default=None, help="keep the work folders here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="log every training epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("pipeline.train").setLevel(logging.INFO)
    files = args.npz or [next((p for p in DEFAULT_NPZ if p.exists()), DEFAULT_NPZ[-1])]
    sets = overrides(args.sets)
    sizes = list(args.sizes)
    if torch.cuda.is_available() and 224 not in sizes:
        sizes.append(224)
    print(
        f"MedMNIST v2 protocol: train on train, select on val, report test; ResNet-50 from random init; "
        f"overrides {json.dumps({g: v for g, v in sets.items() if v}) or 'none'}; device "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'} ({torch.get_num_threads()} threads)"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="medmnist-protocol-") as tmp:
        for npz in files:
            dataset = npz.stem.lower()
            root = (args.out or Path(tmp)) / dataset
            workdir, dims = prepare(npz, root, args.limit)
            for size in sizes:
                if dims == 3 and size > 64:
                    continue
                row = {"dataset": dataset, "dims": dims, "size": size, **run_one(workdir, dims, size, sets)}
                paper = PAPER.get(dataset, {})
                reference = paper_row(dataset, dims, size)
                row["paper"] = {"row": reference, "auroc_acc": paper.get(reference)}
                results.append(row)
                published = paper.get(reference)
                print(
                    f"{dataset:16s} {dims}D {size:3d} px  test AUROC {row['auroc']:.3f}  ACC {row['acc']:.3f}  "
                    f"(n={row['n_test']}; best val AUROC {row['best_val_auroc']:.3f} at epoch {row['best_epoch']}/"
                    f"{row['epochs_run']}; {row['train_s']:.0f} s; test-time flips {'on' if row['tta_flips'] else 'off'}, "
                    f"AUROC with them {'off' if row['tta_flips'] else 'on'} {row['auroc_flipped_tta']:.3f})   paper {reference}: "
                    + (f"AUROC {published[0]:.3f}  ACC {published[1]:.3f}" if published else "n/a"),
                    flush=True,
                )
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        context = PAPER.get(dataset)
        if context:
            print(
                f"{dataset} in the paper (test AUROC / ACC): "
                + "; ".join(f"{k} {a:.3f}/{c:.3f}" for k, (a, c) in context.items())
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(pd.DataFrame(results)[["dataset", "dims", "size", "auroc", "acc", "train_s"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
